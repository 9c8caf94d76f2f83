"""Chat webhook URLs are read from the environment or an owner-only file, never from Prefect.

A Prefect Secret block is readable by every client of the Prefect API (`include_secrets`), so a
`block:` reference is refused with the way to move it; a `file:` reference reads
REMEDY_HOME/secrets/<name> only when it is a regular file of the current user with mode 0600.
No error carries the secret.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from demo.catchers import ChatReceiver
from flows.local.stack import free_port
from models.enums import NotificationChannel, NotificationStatus
from models.intake import DirectoryIn
from models.tables import Notification
from notifications.secrets import SecretRefError, resolve_secret, secret_path
from tasks.inputs import InputError, validate
from tests.conftest import ROOT, Store
from tests.integration.factories import Clock, rows, start_sample_case

URL = "json://127.0.0.1:9/hooks/s3cret-token"


def _write(home: Path, name: str, value: str = URL, mode: int = 0o600) -> Path:
    path = secret_path(home, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")
    path.chmod(mode)
    return path


def _refused(ref: str, home: Path) -> str:
    with pytest.raises(SecretRefError) as caught:
        resolve_secret(ref, home=home)
    message = str(caught.value)
    assert URL not in message and "s3cret" not in message
    return message


def test_env_reference_reads_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMEDY_CHAT_TEST", URL)
    assert resolve_secret("env:REMEDY_CHAT_TEST", home=tmp_path) == URL
    monkeypatch.delenv("REMEDY_CHAT_TEST")
    assert (
        _refused("env:REMEDY_CHAT_TEST", tmp_path)
        == "the chat secret env:REMEDY_CHAT_TEST is not set"
    )


def test_file_reference_reads_an_owner_only_file(tmp_path: Path) -> None:
    _write(tmp_path, "ops-hook")
    assert resolve_secret("file:ops-hook", home=tmp_path) == URL


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o400, 0o700])
def test_file_reference_refuses_any_other_mode(tmp_path: Path, mode: int) -> None:
    path = _write(tmp_path, "ops-hook", mode=mode)
    message = _refused("file:ops-hook", tmp_path)
    assert f"chmod 600 {path}" in message


def test_file_reference_refuses_a_file_of_another_user(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("only root can give a file to another user here")
    path = _write(tmp_path, "ops-hook")
    os.chown(path, 65534, 65534)  # nobody
    assert "not a file owned by the user sending messages" in _refused("file:ops-hook", tmp_path)


def test_file_reference_refuses_links_folders_missing_and_empty_files(tmp_path: Path) -> None:
    target = _write(tmp_path, "real")
    secret_path(tmp_path, "link").symlink_to(target)
    assert "cannot read" in _refused("file:link", tmp_path)
    secret_path(tmp_path, "folder").mkdir(mode=0o700)
    assert _refused("file:folder", tmp_path)
    assert "there is no file" in _refused("file:missing", tmp_path)
    _write(tmp_path, "empty", value="")
    assert "is empty" in _refused("file:empty", tmp_path)
    assert "not a plain file name" in _refused("file:../real", tmp_path)
    assert "not a plain file name" in _refused("file:", tmp_path)


def test_a_block_reference_says_how_to_move_it(tmp_path: Path) -> None:
    message = _refused("block:remedy-ops-slack", tmp_path)
    assert "Prefect Secret block" in message
    assert str(tmp_path / "secrets" / "remedy-ops-slack") in message
    assert "file:remedy-ops-slack" in message
    assert _refused("vault:x", tmp_path).endswith("neither env:NAME nor file:name")


def _directory(secret_ref: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "stakeholders.yaml").read_text())
    data["stakeholders"][0]["chat"]["secret_ref"] = secret_ref
    return data


@pytest.mark.parametrize(
    ("ref", "says"),
    [
        ("block:remedy-ops-slack", "Prefect Secret blocks are no longer read"),
        ("file:../etc/passwd", "must be env:NAME"),
        ("file:", "must be env:NAME"),
        ("env:lower", "must be env:NAME"),
    ],
)
def test_the_directory_refuses_references_that_are_not_env_or_file(ref: str, says: str) -> None:
    with pytest.raises(InputError) as caught:
        validate(DirectoryIn, _directory(ref), source="stakeholders.yaml")
    [problem] = caught.value.problems
    assert problem.startswith("stakeholders[0].chat.secret_ref: ") and says in problem
    validate(DirectoryIn, _directory("file:remedy-ops"), source="stakeholders.yaml")


def test_chat_messages_go_out_with_a_file_secret(
    store: Store, monkeypatch: pytest.MonkeyPatch, remedy_env: Path
) -> None:
    from sqlmodel import select

    from models.tables import Stakeholder
    from tasks.drain import deliver_due
    from tasks.store.db import unit_of_work

    receiver = ChatReceiver(port=free_port()).start()
    try:
        monkeypatch.delenv("REMEDY_SMTP_URL", raising=False)
        monkeypatch.delenv("REMEDY_CHAT_OPS", raising=False)
        _write(remedy_env, "remedy-ops", f"json://127.0.0.1:{receiver.port}/hooks/ops")
        clock = Clock()
        case = start_sample_case(clock)
        with unit_of_work() as session:
            for person in session.exec(select(Stakeholder).where(Stakeholder.chat_kind != None)):  # noqa: E711
                person.chat_secret_ref = "file:remedy-ops"
                session.add(person)
        deliver_due(now=clock.tick())
        chats = [n for n in rows(Notification) if n.channel == NotificationChannel.CHAT]
        assert chats and all(n.status == NotificationStatus.DELIVERED for n in chats)
        assert len(receiver.delivered()) == len(chats)
        assert case.ref
    finally:
        receiver.stop()
