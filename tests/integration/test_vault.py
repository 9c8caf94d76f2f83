"""The encryption key: created safely, read from settings, and wrong keys fail loudly."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet


def _fresh() -> None:
    from models.settings import get_settings
    from tasks.store.vault import _vault_for

    get_settings.cache_clear()
    _vault_for.cache_clear()


def test_key_init_creates_an_owner_only_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integration.test_intake import run_cli

    monkeypatch.delenv("REMEDY_ENCRYPTION_KEY")
    _fresh()
    assert run_cli("key", "init") == 0
    key_file = Path("var") / "remedy.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    content = key_file.read_text()
    assert run_cli("key", "init") == 0  # never overwrites
    assert key_file.read_text() == content
    from tasks.store.vault import get_vault

    vault = get_vault()
    assert vault.decrypt(vault.encrypt({"a": "b"})) == {"a": "b"}
    assert content.strip() not in repr(vault)


def test_world_readable_key_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.store.vault import VaultError, get_vault

    monkeypatch.delenv("REMEDY_ENCRYPTION_KEY")
    key_file = tmp_path / "k.key"
    key_file.write_text(Fernet.generate_key().decode())
    key_file.chmod(0o644)
    monkeypatch.setenv("REMEDY_ENCRYPTION_KEY_FILE", str(key_file))
    _fresh()
    with pytest.raises(VaultError, match="chmod 600"):
        get_vault()


def test_missing_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.store.vault import VaultError, get_vault

    monkeypatch.delenv("REMEDY_ENCRYPTION_KEY")
    _fresh()
    with pytest.raises(VaultError, match="remedy key init"):
        get_vault()


def test_key_rotation_reads_old_data(monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.store.vault import VaultError, get_vault

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv("REMEDY_ENCRYPTION_KEY", old)
    _fresh()
    token = get_vault().encrypt({"name": "x"})
    monkeypatch.setenv("REMEDY_ENCRYPTION_KEY", f"{new},{old}")
    _fresh()
    assert get_vault().decrypt(token) == {"name": "x"}
    monkeypatch.setenv("REMEDY_ENCRYPTION_KEY", new)
    _fresh()
    with pytest.raises(VaultError, match="cannot be decrypted"):
        get_vault().decrypt(token)


def test_keyed_hash_does_not_reveal_input(monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    from tasks.store.vault import get_vault

    vault = get_vault()
    assert vault.keyed_hash(b"abc") == vault.keyed_hash(b"abc")
    assert vault.keyed_hash(b"abc") != hashlib.sha256(b"abc").hexdigest()
