"""Encryption at rest of personal data (Fernet), per-case data keys, and keyed hashes.

Two kinds of key (docs/security.md, Keys: per-case data keys and rotation):

- the master key(s), in the key file or REMEDY_ENCRYPTION_KEY: the first encrypts, all decrypt.
  They wrap each case's data key (`case_key`, envelope encryption) and seal the few values that
  belong to no case's personal data (a one-time code on its way to its recipient).
- the derivation secret (`derive.key`), from which approval-code hashes, link signatures, CSRF
  tokens and audit tags derive. It never changes with rotation, so nothing in flight breaks. An
  installation from before it existed gets it pinned to what its first key derived.

A value sealed with a case's data key reads `ck1:<case id>:<Fernet token>`; a value sealed with the
master key is a bare Fernet token, and both decrypt. Destroying a case's data key
(`destroy_case_key`) leaves every copy of what it sealed unreadable.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import uuid
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from models.keys import CaseKey
from models.settings import Settings, get_settings
from tasks.store.home import private_parent

CASE_PREFIX = "ck1:"
_SESSION_KEYS = "remedy_case_keys"  # per-session cache of unwrapped data keys (Session.info)
DESTROYED = (
    "the data key of this case was destroyed (retention or erasure): its personal data can no "
    "longer be read"
)


class VaultError(Exception):
    """The encryption key is missing, unreadable or does not match the stored data."""


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


class Vault:
    """Encrypts and decrypts personal data; the keys never appear in repr, logs or errors."""

    def __init__(self, keys: list[str], derive_secret: bytes | None = None) -> None:
        if not keys:
            raise VaultError("no encryption key given")
        try:
            fernets = [Fernet(k.encode()) for k in keys]
        except (ValueError, TypeError):
            raise VaultError(
                "the encryption key is not a valid Fernet key (32 url-safe base64 bytes); "
                "create one with `remedy key init`"
            ) from None
        self._keys = tuple(keys)
        self._fernets = fernets
        self._fernet = MultiFernet(fernets)
        # before derive.key existed everything derived from the first key's text: the default
        self._secret = derive_secret if derive_secret is not None else keys[0].encode()
        self._hash_key = self._derive(b"remedy content hash v1")

    def __repr__(self) -> str:
        return "Vault(<keys hidden>)"

    def _derive(self, info: bytes) -> bytes:
        return _hkdf(self._secret, info)

    # --- sealed under the master key ---------------------------------------------------------

    def encrypt(self, data: dict[str, Any]) -> str:
        """Encrypt a JSON-serialisable mapping under the master key into a token safe to store."""
        return self._fernet.encrypt(_dump(data)).decode()

    def decrypt(self, token: str) -> dict[str, Any]:
        """Decrypt a stored token, master-key or case-key sealed, back into its mapping.

        A case-key token's data key is read in a session of its own (committed keys only);
        inside a transaction prefer `decrypt_for_case`.
        """
        if token.startswith(CASE_PREFIX):
            from tasks.store.db import read_only

            with read_only() as session:
                return self.decrypt_for_case(session, _case_of(token), token)
        try:
            raw = self._fernet.decrypt(token.encode())
        except InvalidToken:
            raise VaultError("stored data cannot be decrypted with the configured key(s)") from None
        result: dict[str, Any] = json.loads(raw)
        return result

    # --- sealed under a case's data key ------------------------------------------------------

    def encrypt_for_case(self, session: Session, case_id: uuid.UUID, data: dict[str, Any]) -> str:
        """Encrypt a mapping under the case's data key (made, wrapped, on first use)."""
        fernet = self._case_fernet(session, case_id, create=True)
        return f"{CASE_PREFIX}{case_id.hex}:{fernet.encrypt(_dump(data)).decode()}"

    def decrypt_for_case(self, session: Session, case_id: uuid.UUID, token: str) -> dict[str, Any]:
        """Decrypt a value of the case: sealed by its data key, or by the master key (older)."""
        if not token.startswith(CASE_PREFIX):
            return self.decrypt(token)
        if _case_of(token) != case_id:
            raise VaultError("stored data is sealed for another case than the one it is kept on")
        fernet = self._case_fernet(session, case_id, create=False)
        try:
            raw = fernet.decrypt(token.rsplit(":", 1)[1].encode())
        except InvalidToken:
            raise VaultError("stored data cannot be decrypted with its case's data key") from None
        result: dict[str, Any] = json.loads(raw)
        return result

    def _case_fernet(self, session: Session, case_id: uuid.UUID, *, create: bool) -> Fernet:
        cache: dict[uuid.UUID, Fernet] = session.info.setdefault(_SESSION_KEYS, {})
        if case_id in cache:
            return cache[case_id]
        row = _case_key(session, case_id)
        if row is None:
            if not create:
                raise VaultError("this case has no data key: its data was not sealed with one")
            row = self._new_case_key(session, case_id)
        if row.wrapped_key is None:
            raise VaultError(DESTROYED)
        fernet = Fernet(self.unwrap(row.wrapped_key))
        cache[case_id] = fernet
        return fernet

    def _new_case_key(self, session: Session, case_id: uuid.UUID) -> CaseKey:
        row = CaseKey(
            case_id=case_id,
            wrapped_key=self.wrap(Fernet.generate_key()),
            created_at=datetime.now(UTC),
        )
        try:
            with session.begin_nested():  # another transaction may make it first: take theirs
                session.add(row)
                session.flush()
        except IntegrityError:
            found = _case_key(session, case_id)
            if found is None:
                raise
            return found
        return row

    # --- the master key's own work: wrapping, and telling which key sealed what -------------

    def wrap(self, data_key: bytes) -> str:
        """Encrypt a case's data key under the first master key."""
        return self._fernet.encrypt(data_key).decode()

    def unwrap(self, wrapped: str) -> bytes:
        """Decrypt a wrapped data key with whichever configured master key wrapped it."""
        try:
            return self._fernet.decrypt(wrapped.encode())
        except InvalidToken:
            raise VaultError(
                "a case's data key cannot be unwrapped with the configured key(s)"
            ) from None

    def key_index(self, token: str) -> int | None:
        """Return which configured master key (0: the first) opens a token, None if none does."""
        for n, fernet in enumerate(self._fernets):
            try:
                fernet.decrypt(token.encode())
            except InvalidToken:
                continue
            return n
        return None

    def reseal(self, token: str) -> str:
        """Return a master-key token sealed again under the first key (key rotation)."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise VaultError("stored data cannot be decrypted with the configured key(s)") from None

    @property
    def master_keys(self) -> tuple[str, ...]:
        """The configured master keys, the first (encrypting) first: for rotation only."""
        return self._keys

    @property
    def key_count(self) -> int:
        """How many master keys are configured (the first encrypts)."""
        return len(self._fernets)

    # --- derived keys: stable across rotation ------------------------------------------------

    def derive(self, purpose: bytes) -> bytes:
        """Return a 32-byte key for one purpose (e.g. signing links), from the derivation secret."""
        return self._derive(purpose)

    def derived_keys(self, purpose: bytes) -> list[bytes]:
        """Return one purpose's key from the derivation secret, then from each master key."""
        return list(_derived_for(self._secret, self._keys, purpose))

    def keyed_hash(self, data: bytes) -> str:
        """Return an HMAC-SHA256 of data: equal inputs match, the input cannot be guessed back."""
        return hmac.new(self._hash_key, data, hashlib.sha256).hexdigest()


def _dump(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, ensure_ascii=False).encode()


def _case_of(token: str) -> uuid.UUID:
    try:
        return uuid.UUID(hex=token[len(CASE_PREFIX) :].split(":", 1)[0])
    except ValueError:
        raise VaultError("stored data is not a case-sealed value") from None


def _case_key(session: Session, case_id: uuid.UUID) -> CaseKey | None:
    return session.exec(select(CaseKey).where(CaseKey.case_id == case_id)).first()


def destroy_case_key(session: Session, case_id: uuid.UUID, now: datetime) -> bool:
    """Destroy a case's data key in the caller's transaction: what it sealed is unreadable for
    good, in every copy and backup (crypto-shredding). Returns False if it was destroyed already.
    """
    session.info.get(_SESSION_KEYS, {}).pop(case_id, None)
    row = _case_key(session, case_id)
    if row is None:  # none made yet: none may be made after
        row = CaseKey(case_id=case_id, wrapped_key=None, created_at=now)
    elif row.destroyed_at is not None:
        return False
    row.wrapped_key = None
    row.destroyed_at = now
    session.add(row)
    session.flush()
    return True


def _read_private(path: Path, what: str) -> str:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise VaultError(f"the {what} {path} is readable by other users; run `chmod 600 {path}`")
    return path.read_text().strip()


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
        keys = _read_private(path, "key file")
    return [k.strip() for k in keys.replace("\n", ",").split(",") if k.strip()]


def read_key_text(path: Path) -> str:
    """Return the one key a file holds (owner-only, like the key file), for `key rotate`."""
    if not path.exists():
        raise VaultError(f"no key file {path}")
    keys = [k for k in _read_private(path, "key file").split() if k]
    if len(keys) != 1:
        raise VaultError(f"{path} must hold exactly one key")
    return keys[0]


def _write_private(path: Path, text: str, settings: Settings) -> bool:
    """Create a file readable by its owner only with the text; False if it exists already.

    Written aside and linked into place, so a process racing to read it never sees it empty.
    """
    private_parent(path, settings.home)
    if path.exists():
        return False
    spare = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
    fd = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.link(spare, path)
    except FileExistsError:
        return False
    finally:
        spare.unlink(missing_ok=True)
    return True


def _derive_secret(settings: Settings, first_key: str) -> bytes:
    if settings.derive_key is not None:
        return settings.derive_key.get_secret_value().strip().encode()
    path = settings.resolved_derive_key_file()
    if not path.exists():
        # pinned to what the first key derived until now: pending codes and links stay valid
        try:
            _write_private(path, first_key, settings)
        except OSError as exc:
            raise VaultError(
                f"cannot create the derivation secret {path} ({exc.strerror}); "
                "set REMEDY_DERIVE_KEY or make its folder writable"
            ) from None
    secret = _read_private(path, "derivation secret")
    if not secret:
        raise VaultError(f"the derivation secret {path} is empty")
    return secret.encode()


@lru_cache(maxsize=4)
def _vault_for(keys: tuple[str, ...], derive_secret: bytes | None = None) -> Vault:
    return Vault(list(keys), derive_secret)


@lru_cache(maxsize=16)
def _derived_for(secret: bytes, keys: tuple[str, ...], purpose: bytes) -> tuple[bytes, ...]:
    found = [_hkdf(secret, purpose)]
    for key in keys:
        derived = _hkdf(key.encode(), purpose)
        if derived not in found:
            found.append(derived)
    return tuple(found)


def get_vault() -> Vault:
    """Return the vault for the configured key(s) and derivation secret."""
    settings = get_settings()
    keys = _read_keys(settings)
    if not keys:
        raise VaultError("no encryption key given")
    return _vault_for(tuple(keys), _derive_secret(settings, keys[0]))


def derived_keys(purpose: bytes) -> list[bytes]:
    """Return one purpose's 32-byte key, the rotation-stable one first.

    The first derives from the derivation secret (it equals `get_vault().derive(purpose)` and
    survives key rotation); the others, from each configured master key, let what was made
    before the secret existed (an audit tag) be checked while that key is still configured.
    """
    return get_vault().derived_keys(purpose)


def init_key_file(path: Path) -> bool:
    """Create a new key file readable by its owner only; return False if one already exists.

    A new installation gets a derivation secret of its own beside it (an existing one keeps
    what it has: its pending codes and links derive from it).
    """
    settings = get_settings()
    if not _write_private(path, Fernet.generate_key().decode(), settings):
        return False
    _write_private(settings.resolved_derive_key_file(), Fernet.generate_key().decode(), settings)
    return True


def write_key_file(path: Path, keys: list[str]) -> None:
    """Replace the key file with these keys, the first encrypting (owner-only, atomically)."""
    Vault(keys)  # refuse a list with a key that is not one
    spare = path.with_name(f".{path.name}.{os.getpid()}.new")
    spare.unlink(missing_ok=True)
    fd = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("".join(f"{k}\n" for k in keys))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(spare, path)
