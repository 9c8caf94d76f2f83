"""The Prefect API credential under REMEDY_HOME: made once, owner-only, reused, never shown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flows.local.credential import (
    CLIENT_VARIABLE,
    CredentialError,
    credential_path,
    ensure_credential,
    read_credential,
    use_home_credential,
    use_remedy_credential,
)


def test_made_once_owner_only_and_reused(tmp_path: Path) -> None:
    home = tmp_path / "var"
    first = ensure_credential(home)
    path = credential_path(home)
    assert path == home / "prefect-api.auth"
    assert path.stat().st_mode & 0o777 == 0o600
    user, _, token = first.partition(":")
    assert user == "remedy" and len(token) >= 40
    assert ensure_credential(home) == first  # the UI login and other shells keep working
    assert ensure_credential(tmp_path / "other") != first


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_credential_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    value = ensure_credential(tmp_path)
    credential_path(tmp_path).chmod(mode)
    with pytest.raises(CredentialError) as caught:
        ensure_credential(tmp_path)
    assert "chmod 600" in str(caught.value) and value not in str(caught.value)


def test_links_other_owners_and_empty_files_are_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.auth"
    real.write_text("remedy:x\n")
    real.chmod(0o600)
    credential_path(tmp_path).symlink_to(real)
    with pytest.raises(CredentialError, match="cannot read"):
        read_credential(credential_path(tmp_path))
    empty = tmp_path / "empty.auth"
    empty.touch(mode=0o600)
    with pytest.raises(CredentialError, match="empty"):
        read_credential(empty)
    if os.getuid() == 0:
        os.chown(real, 65534, 65534)
        with pytest.raises(CredentialError, match="not a file of yours"):
            read_credential(real)


def test_a_command_in_another_shell_takes_the_homes_credential(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    assert not use_home_credential(tmp_path, env)  # no credential yet: nothing to carry
    assert env == {}
    value = ensure_credential(tmp_path)
    assert use_home_credential(tmp_path, env) and env == {CLIENT_VARIABLE: value}
    explicit = {CLIENT_VARIABLE: "ops:their-own"}
    assert not use_home_credential(tmp_path, explicit)  # a scaled installation's own wins
    assert explicit == {CLIENT_VARIABLE: "ops:their-own"}


def test_the_configured_home_is_the_one_read(
    remedy_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CLIENT_VARIABLE, "")  # recorded, so the value set below is undone
    monkeypatch.delenv(CLIENT_VARIABLE)
    value = ensure_credential(remedy_env)
    assert use_remedy_credential()
    assert os.environ[CLIENT_VARIABLE] == value
