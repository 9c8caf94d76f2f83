"""Per-case data keys, key rotation and REMEDY_HOME's file modes, on real SQLite and PostgreSQL.

A case's personal data is sealed with the case's own data key, wrapped by the master key(s);
`remedy key rotate` puts a new master key first and re-wraps (and re-encrypts) what the old one
sealed, while approval codes and signed links keep working: they derive from a secret that does
not change with rotation (docs/security.md, Keys: per-case data keys and rotation).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlmodel import col, select

from models.enums import DecisionKind, LinkPurpose, NotificationStatus
from models.keys import CaseKey
from models.tables import ApprovalLink, Notification, Stakeholder
from tasks.decisions.resume import issued_code
from tasks.reporter.receipts import follow_up, reporter_writes
from tasks.reporter.staff import reply, set_note, threads
from tasks.store.cases import get_case, reveal_identifying_data
from tasks.store.db import read_only, unit_of_work
from tasks.store.key_rotation import key_status, rotate_keys
from tasks.store.links import link_token, read_run_link_token, run_link_token
from tasks.store.person_views import latest_views, record_person_view
from tasks.store.vault import Vault, VaultError, destroy_case_key, get_vault
from tasks.web.resolve import resolve_link
from tests.conftest import Store, _clear_caches
from tests.integration.factories import ADVOCATE, LEAD, Clock, dump_store, script, start_sample_case
from tests.integration.test_intake import run_cli
from tests.integration.test_reporter import filed_on

CANARY_MESSAGE = "Canary-Mwamba-5521 was hurt at the pit"
CANARY_REPLY = "We hear you (Canary-Reply-9035)"
CANARY_NOTE = "Canary-Note-2210: the team is checking"
CANARY_VIEW = "Canary-View-6612: P-01 wants the debt cancelled"


def use_key_file(home: Path, monkeypatch: pytest.MonkeyPatch, *keys: str) -> Path:
    """Move the keys from the environment into REMEDY_HOME's key file, as an installation has."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "remedy.key"
    path.write_text("".join(f"{k}\n" for k in keys))
    path.chmod(0o600)
    monkeypatch.delenv("REMEDY_ENCRYPTION_KEY", raising=False)
    _clear_caches()
    return path


def decide_link(request_id: uuid.UUID, key: str) -> ApprovalLink:
    """The decide link a request's approver received."""
    with read_only() as session:
        return session.exec(
            select(ApprovalLink)
            .join(Stakeholder, col(Stakeholder.id) == col(ApprovalLink.stakeholder_id))
            .where(
                ApprovalLink.request_id == request_id,
                Stakeholder.key == key,
                ApprovalLink.purpose == LinkPurpose.DECIDE,
            )
        ).one()


def file_keys(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def personal_data(case_ref: str, code: str) -> dict[str, object]:
    """Everything personal the case holds, decrypted through the functions that read it."""
    clock = Clock()
    revealed = reveal_identifying_data(case_ref, actor="test", reason="key test", now=clock.now)
    seen = follow_up(code, now=clock.now)
    assert seen is not None
    staff = threads(case_ref, by=LEAD, now=clock.now)
    with read_only() as session:
        case = get_case(session, case_ref)
        views = latest_views(session, case.id, with_text=True)
    return {
        "description": revealed.description,
        "reporter": revealed.reporter,
        "identities": revealed.identities,
        "note": seen.reason_note,
        "thread": [(m.from_reporter, m.text) for m in seen.messages],
        "contacts": [t.contact_ok for t in staff],
        "staff_thread": [[m.text for m in t.messages] for t in staff],
        "views": {p: v.text for p, v in views.items()},
    }


def pending_codes() -> list[str]:
    """The codes the outbox still holds for delivery, decrypted as the drain does."""
    with read_only() as session:
        found = session.exec(
            select(Notification).where(Notification.status == NotificationStatus.PENDING)
        ).all()
    vault = get_vault()
    return sorted(
        str(vault.decrypt(n.context["code_ciphertext"])["code"])
        for n in found
        if n.context.get("code_ciphertext")
    )


def test_rotation_keeps_a_waiting_decision_and_its_link_and_the_old_key_can_go(
    store: Store, remedy_env: Path, monkeypatch: pytest.MonkeyPatch, session_key: str
) -> None:
    key_file = use_key_file(remedy_env, monkeypatch, session_key)
    clock = Clock()
    case = start_sample_case(clock)
    filed = filed_on(case)
    assert reporter_writes(filed.code, CANARY_MESSAGE, now=clock.tick())
    reply(case.ref, CANARY_REPLY, by=LEAD, now=clock.tick())
    set_note(case.ref, CANARY_NOTE, by=LEAD, now=clock.tick())
    record_person_view(
        case.ref, "P-01", CANARY_VIEW, by=ADVOCATE, given_by="person", now=clock.tick()
    )
    # a decision waiting, its approval code issued and an approval link outstanding
    request_id = case.prepare(DecisionKind.SCREENING).request_id
    link = decide_link(request_id, LEAD)
    token = link_token(link.id, link.expires_at)
    run_token = run_link_token(request_id)
    code = issued_code(request_id, LEAD)
    assert code is not None
    outbox_codes = pending_codes()
    assert code in outbox_codes
    before = personal_data(case.ref, filed.code)
    assert before["thread"] == [(True, CANARY_MESSAGE), (False, CANARY_REPLY)]
    assert before["views"] == {"P-01": CANARY_VIEW}
    with read_only() as session:  # the case's personal data is under its own key
        assert session.exec(select(CaseKey).where(CaseKey.case_id == case.case().id)).one()

    assert run_cli("key", "rotate") == 0
    keys = file_keys(key_file)
    assert len(keys) == 2 and keys[1] == session_key and keys[0] != session_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    status = key_status()
    assert status.under_old == 0 and status.unreadable == 0 and status.under_current > 0
    # nothing the store holds opens under the old key alone any more
    old = Vault([session_key])
    everything = dump_store(store)
    assert not any(_opens(old, word) for word in everything.split())

    key_file.write_text(keys[0] + "\n")  # the old key removed
    _clear_caches()
    assert personal_data(case.ref, filed.code) == before
    assert pending_codes() == outbox_codes
    assert issued_code(request_id, LEAD) == code
    assert read_run_link_token(run_token) == request_id
    view = resolve_link(token, now=clock.tick())
    assert view.request_id == request_id
    result = case.submit(request_id, LEAD, script(DecisionKind.SCREENING)[1], code=code)
    assert result.accepted, result.reason
    assert run_cli("key", "status") == 0


def _opens(vault: Vault, word: str) -> bool:
    try:
        vault.decrypt(word.strip("',()"))
    except (VaultError, ValueError):
        return False
    return True


def test_codes_and_links_keep_the_derivation_of_an_installation_made_before_rotation(
    remedy_env: Path, monkeypatch: pytest.MonkeyPatch, session_key: str
) -> None:
    """An installation upgraded to this version keeps its pending codes and links: the secret
    they derive from is pinned to what its first key derived before, and rotation keeps it."""
    use_key_file(remedy_env, monkeypatch, session_key)
    before = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"remedy approval links v1"
    ).derive(session_key.encode())
    assert get_vault().derive(b"remedy approval links v1") == before
    derive_file = remedy_env / "derive.key"
    assert stat.S_IMODE(derive_file.stat().st_mode) == 0o600
    request_id = uuid.uuid4()
    sealed = run_link_token(request_id)
    hashed = get_vault().keyed_hash(b"approval:someone:ABCD")
    new_key = Fernet.generate_key().decode()
    use_key_file(remedy_env, monkeypatch, new_key, session_key)
    assert get_vault().derive(b"remedy approval links v1") == before
    assert get_vault().keyed_hash(b"approval:someone:ABCD") == hashed
    use_key_file(remedy_env, monkeypatch, new_key)
    assert read_run_link_token(sealed) == request_id


def test_a_new_installation_derives_from_a_secret_of_its_own(
    remedy_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REMEDY_ENCRYPTION_KEY")
    _clear_caches()
    assert run_cli("key", "init") == 0
    master = file_keys(remedy_env / "remedy.key")[0]
    secret = (remedy_env / "derive.key").read_text().strip()
    assert secret and secret != master
    assert stat.S_IMODE((remedy_env / "derive.key").stat().st_mode) == 0o600


def test_a_destroyed_case_key_leaves_its_data_unreadable_and_says_so(store: Store) -> None:
    clock = Clock()
    case = start_sample_case(clock)
    vault = get_vault()
    with unit_of_work() as session:
        case_id = get_case(session, case.ref).id
        sealed = vault.encrypt_for_case(session, case_id, {"name": "Canary-Shred-4410"})
        legacy = vault.encrypt({"name": "older"})
    assert sealed.startswith("ck1:") and "Canary" not in sealed
    with read_only() as session:
        assert vault.decrypt_for_case(session, case_id, sealed) == {"name": "Canary-Shred-4410"}
        assert vault.decrypt_for_case(session, case_id, legacy) == {"name": "older"}
        with pytest.raises(VaultError, match="another case"):
            vault.decrypt_for_case(session, uuid.uuid4(), sealed)
    assert vault.decrypt(sealed) == {"name": "Canary-Shred-4410"}  # finds the case's key itself
    with unit_of_work() as session:
        destroy_case_key(session, case_id, now=clock.tick())
    with read_only() as session:
        row = session.exec(select(CaseKey).where(CaseKey.case_id == case_id)).one()
        assert row.wrapped_key is None and row.destroyed_at is not None
        with pytest.raises(VaultError, match="destroyed") as caught:
            vault.decrypt_for_case(session, case_id, sealed)
    assert "Canary" not in str(caught.value)
    with unit_of_work() as session, pytest.raises(VaultError, match="destroyed"):
        vault.encrypt_for_case(session, case_id, {"name": "new"})


def test_an_interrupted_rotation_is_finished_by_running_it_again(
    store: Store, remedy_env: Path, monkeypatch: pytest.MonkeyPatch, session_key: str
) -> None:
    key_file = use_key_file(remedy_env, monkeypatch, session_key)
    clock = Clock()
    case = start_sample_case(clock)
    case.prepare(DecisionKind.SCREENING)
    before = reveal_identifying_data(case.ref, actor="t", reason="r", now=clock.now)
    # interrupted after the new key went first and one batch was re-encrypted
    new_key = Fernet.generate_key().decode()
    use_key_file(remedy_env, monkeypatch, new_key, session_key)
    first = rotate_keys(now=clock.tick(), batch_size=1, max_batches=1)
    assert not first.finished and key_status().under_old > 0
    done = rotate_keys(now=clock.tick(), batch_size=2)
    assert done.finished and not done.added_key  # the interrupted one finished, no third key
    assert file_keys(key_file) == [new_key, session_key]
    assert key_status().under_old == 0
    use_key_file(remedy_env, monkeypatch, new_key)
    after = reveal_identifying_data(case.ref, actor="t", reason="r", now=clock.now)
    assert (after.description, after.identities) == (before.description, before.identities)


def test_rotation_with_a_key_from_the_environment_asks_for_it_first(store: Store) -> None:
    assert run_cli("key", "rotate") == 1  # REMEDY_ENCRYPTION_KEY: the file cannot be rewritten


# --- REMEDY_HOME and its files --------------------------------------------------------------------


def _modes(home: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(home.stat().st_mode)}
    for path in home.rglob("*"):
        found[str(path.relative_to(home))] = stat.S_IMODE(path.stat().st_mode)
    return found


PROBE = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("CREATE TABLE t (x)")
conn.commit()
print("probe wrote its database")
"""


def test_a_fresh_home_is_private_and_so_is_every_file_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from flows.local.credential import ensure_credential
    from flows.local.stack import LocalStack
    from flows.local.up import prepare_store

    home = tmp_path / "fresh-home"
    monkeypatch.setenv("REMEDY_HOME", str(home))
    monkeypatch.delenv("REMEDY_ENCRYPTION_KEY")
    old_umask = os.umask(0o022)  # a host's usual umask: files readable by everyone
    caplog.set_level("WARNING")
    try:
        _clear_caches()
        assert run_cli("key", "init") == 0
        assert run_cli("db", "upgrade") == 0
        prepare_store()  # what `remedy up` does first
        get_vault()
        ensure_credential(home)
        # the embedded Prefect server's database is made by a child the stack starts
        stack = LocalStack(home=home)
        prefect_db = home / "prefect" / "prefect.db"
        stack.prepare_prefect_home()
        stack._spawn("probe", [sys.executable, "-c", PROBE, str(prefect_db)], dict(os.environ))
        assert stack.processes["probe"].wait(timeout=30) == 0
        stack.stop()
    finally:
        os.umask(old_umask)
    assert "open to other users" not in caplog.text  # made private, not tightened afterwards
    modes = _modes(home)
    for name in ("remedy.key", "derive.key", "remedy.db", "prefect-api.auth", "logs/probe.log"):
        assert name in modes
    assert "prefect/prefect.db" in modes
    dirs = {n for n in modes if (home / n).is_dir()}
    assert {n: m for n, m in modes.items() if n in dirs and m != 0o700} == {}
    assert {n: m for n, m in modes.items() if n not in dirs and m != 0o600} == {}
    with sa.create_engine(f"sqlite:///{home / 'remedy.db'}").connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM case_key").scalar_one() == 0


def test_an_open_home_is_tightened_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "open-home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    old = home / "remedy.db"
    subprocess.run([sys.executable, "-c", PROBE, str(old)], check=True, capture_output=True)
    old.chmod(0o644)
    monkeypatch.setenv("REMEDY_HOME", str(home))
    _clear_caches()
    with caplog.at_level("WARNING"):
        assert run_cli("db", "upgrade") == 0
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
    assert "was open to other users" in caplog.text


def test_status_counts_without_showing_data(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = Clock()
    start_sample_case(clock)
    capsys.readouterr()
    assert run_cli("key", "status") == 0
    shown = capsys.readouterr().out
    assert "case keys" in shown and "key 1" in shown
    assert "Bukavu" not in shown


def test_rotation_moves_older_master_sealed_personal_data_under_its_case_key(
    store: Store, remedy_env: Path, monkeypatch: pytest.MonkeyPatch, session_key: str
) -> None:
    """Personal data sealed before per-case keys existed joins its case's key on rotation, so
    destroying that key makes it unreadable too (retention)."""
    from models.tables import AffectedPerson

    use_key_file(remedy_env, monkeypatch, session_key)
    clock = Clock()
    case = start_sample_case(clock)
    before = reveal_identifying_data(case.ref, actor="t", reason="r", now=clock.now)
    vault = get_vault()
    with unit_of_work() as session:  # as an older version stored them: bare master-key tokens
        case_id = get_case(session, case.ref).id
        for person in session.exec(select(AffectedPerson)).all():
            if person.identity_ciphertext:
                identity = vault.decrypt_for_case(session, case_id, person.identity_ciphertext)
                person.identity_ciphertext = vault.encrypt(identity)
                session.add(person)
    assert before.identities
    assert rotate_keys(now=clock.tick()).finished
    with read_only() as session:
        sealed = [p.identity_ciphertext for p in session.exec(select(AffectedPerson)).all()]
    assert all(s.startswith(f"ck1:{case_id.hex}:") for s in sealed if s)
    after = reveal_identifying_data(case.ref, actor="t", reason="r", now=clock.now)
    assert after.identities == before.identities
    with unit_of_work() as session:
        destroy_case_key(session, case_id, now=clock.tick())
    with pytest.raises(VaultError, match="destroyed"):
        reveal_identifying_data(case.ref, actor="t", reason="r", now=clock.now)


def test_two_writers_sealing_for_one_case_at_once_share_one_data_key(store: Store) -> None:
    import threading

    case = start_sample_case(Clock())
    with unit_of_work() as session:  # the case starts with no data key
        case_id = get_case(session, case.ref).id
        for row in session.exec(select(CaseKey).where(CaseKey.case_id == case_id)).all():
            session.delete(row)
    ready = threading.Barrier(2)
    sealed: list[str] = []
    failures: list[BaseException] = []

    def write(n: int) -> None:
        try:
            ready.wait(timeout=10)
            with unit_of_work() as session:
                sealed.append(get_vault().encrypt_for_case(session, case_id, {"n": n}))
        except BaseException as exc:  # reported below: a thread's exception is otherwise lost
            failures.append(exc)

    threads_ = [threading.Thread(target=write, args=(n,)) for n in (1, 2)]
    for t in threads_:
        t.start()
    for t in threads_:
        t.join(timeout=60)
    assert failures == [] and len(sealed) == 2
    with read_only() as session:
        assert len(session.exec(select(CaseKey).where(CaseKey.case_id == case_id)).all()) == 1
        opened = sorted(get_vault().decrypt_for_case(session, case_id, s)["n"] for s in sealed)
    assert opened == [1, 2]


def test_rotation_takes_a_key_of_your_own_from_an_owner_only_file(
    store: Store, remedy_env: Path, monkeypatch: pytest.MonkeyPatch, session_key: str
) -> None:
    key_file = use_key_file(remedy_env, monkeypatch, session_key)
    start_sample_case(Clock())
    mine = Fernet.generate_key().decode()
    given = remedy_env.parent / "new.key"
    given.write_text(mine + "\n")
    given.chmod(0o644)
    assert run_cli("key", "rotate", "--new-key-file", str(given)) == 1  # others could read it
    assert file_keys(key_file) == [session_key]
    given.chmod(0o600)
    assert run_cli("key", "rotate", "--new-key-file", str(given)) == 0
    assert file_keys(key_file) == [mine, session_key]
    assert run_cli("key", "rotate", "--new-key-file", str(given)) == 0  # already first: no change
    assert file_keys(key_file) == [mine, session_key]
    assert key_status().under_old == 0
