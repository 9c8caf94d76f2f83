"""Encryption at rest of identifying data (Fernet), and keyed hashes for duplicate detection."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from models.settings import Settings, get_settings


class VaultError(Exception):
    """The encryption key is missing, unreadable or does not match the stored data."""


class Vault:
    """Encrypts and decrypts identifying data; the keys never appear in repr, logs or errors."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise VaultError("no encryption key given")
        try:
            fernets = [Fernet(k.encode()) for k in keys]
        except (ValueError, TypeError):
            raise VaultError(
                "the encryption key is not a valid Fernet key (32 url-safe base64 bytes); "
                "create one with `remedy key init`"
            ) from None
        self._fernet = MultiFernet(fernets)
        self._primary = keys[0].encode()
        self._hash_key = self._derive(b"remedy content hash v1")

    def __repr__(self) -> str:
        return "Vault(<keys hidden>)"

    def _derive(self, info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
            self._primary
        )

    def encrypt(self, data: dict[str, Any]) -> str:
        """Encrypt a JSON-serialisable mapping into a token safe to store."""
        raw = json.dumps(data, sort_keys=True, ensure_ascii=False).encode()
        return self._fernet.encrypt(raw).decode()

    def decrypt(self, token: str) -> dict[str, Any]:
        """Decrypt a stored token back into its mapping."""
        try:
            raw = self._fernet.decrypt(token.encode())
        except InvalidToken:
            raise VaultError("stored data cannot be decrypted with the configured key(s)") from None
        result: dict[str, Any] = json.loads(raw)
        return result

    def derive(self, purpose: bytes) -> bytes:
        """Return a 32-byte key for one purpose (e.g. signing links), derived from the main key."""
        return self._derive(purpose)

    def keyed_hash(self, data: bytes) -> str:
        """Return an HMAC-SHA256 of data: equal inputs match, the input cannot be guessed back."""
        return hmac.new(self._hash_key, data, hashlib.sha256).hexdigest()


def _read_keys(settings: Settings) -> list[str]:
    if settings.encryption_key is not None:
        keys = settings.encryption_key.get_secret_value()
    else:
        path = settings.resolved_key_file()
        if not path.exists():
            raise VaultError(
                f"no encryption key: set REMEDY_ENCRYPTION_KEY or create {path} "
                "with `remedy key init`"
            )
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise VaultError(
                f"the key file {path} is readable by other users; run `chmod 600 {path}`"
            )
        keys = path.read_text().strip()
    return [k.strip() for k in keys.replace("\n", ",").split(",") if k.strip()]


@lru_cache(maxsize=4)
def _vault_for(keys: tuple[str, ...]) -> Vault:
    return Vault(list(keys))


def get_vault() -> Vault:
    """Return the vault for the configured key(s)."""
    return _vault_for(tuple(_read_keys(get_settings())))


def init_key_file(path: Path) -> bool:
    """Create a new key file readable by its owner only; return False if one already exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(Fernet.generate_key().decode() + "\n")
    return True
