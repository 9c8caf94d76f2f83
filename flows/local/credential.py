"""The Prefect API credential of a local stack, kept under REMEDY_HOME.

`remedy up` and `make demo` run the Prefect server with `PREFECT_SERVER_API_AUTH_STRING` and every
client with `PREFECT_API_AUTH_STRING`, both read from one file made once, owner-only (0600), and
reused so that the Prefect UI login and the `remedy` command in another shell keep working across
restarts. The value is a secret: it is never printed, logged or put into an exception.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import MutableMapping
from pathlib import Path

CREDENTIAL_FILE = "prefect-api.auth"
USER = "remedy"
CLIENT_VARIABLE = "PREFECT_API_AUTH_STRING"
NOT_ADMITTED = (
    "the Prefect API answered 401 Unauthorized: run this where REMEDY_HOME holds the "
    f"{CREDENTIAL_FILE} that `remedy up` made, or set {CLIENT_VARIABLE}"
)


class CredentialError(RuntimeError):
    """The credential file is missing, empty or readable by others (the message holds no secret)."""


def credential_path(home: Path) -> Path:
    """Return where a Remedy home keeps its Prefect API credential."""
    return home / CREDENTIAL_FILE


def ensure_credential(home: Path) -> str:
    """Return the home's credential; the first call makes it (0600, a random `remedy:<token>`)."""
    from tasks.store.home import private_parent

    path = credential_path(home)
    private_parent(path, home)  # REMEDY_HOME owner-only (0700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return read_credential(path)
    value = f"{USER}:{secrets.token_urlsafe(32)}"
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def read_credential(path: Path) -> str:
    """Read a credential file that only its owner, the current user, can read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise CredentialError(
            f"cannot read the Prefect API credential {path} ({exc.strerror})"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            raise CredentialError(f"the Prefect API credential {path} is not a file of yours")
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CredentialError(
                f"the Prefect API credential {path} is readable by other users; "
                f"run `chmod 600 {path}`"
            )
        value = os.read(fd, 4096).decode("utf-8", errors="replace").strip()
    finally:
        os.close(fd)
    if not value:
        raise CredentialError(f"the Prefect API credential {path} is empty; delete it to renew")
    return value


def use_home_credential(home: Path, environ: MutableMapping[str, str] | None = None) -> bool:
    """Make Prefect clients in this process carry the home's credential, if it has one.

    Called before Prefect is imported (Prefect reads its settings once): a `remedy` command run
    in another shell then reaches the server `remedy up` started without being told the secret.
    An explicit PREFECT_API_AUTH_STRING (a scaled installation's own credential) wins.
    """
    env = os.environ if environ is None else environ
    if env.get(CLIENT_VARIABLE):
        return False
    path = credential_path(home)
    if not path.exists():
        return False
    env[CLIENT_VARIABLE] = read_credential(path)
    return True


def use_remedy_credential() -> bool:
    """Load the credential of the configured REMEDY_HOME, as `use_home_credential` does."""
    from pydantic import ValidationError

    from models.settings import get_settings

    try:
        home = get_settings().home
    except ValidationError:
        return False  # the command itself reports the setting that is wrong
    return use_home_credential(home)
