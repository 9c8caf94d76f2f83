"""Where a chat webhook URL (a credential) is kept, and reading it from there.

The stakeholder directory names only a reference: `env:NAME` (an environment variable of the
sending process) or `file:name` (the file REMEDY_HOME/secrets/name, owner-only). Prefect Secret
blocks (`block:name`) are no longer read: any client of the Prefect API can read them back with
`include_secrets`, so a webhook kept there is as open as the API. Errors name the reference,
never the value.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from notifications.send import DeliveryFailedError

SECRETS_DIR = "secrets"
MAX_BYTES = 16_384  # a webhook URL; more is not one


class SecretRefError(DeliveryFailedError):
    """A chat secret reference cannot be read; the message says why and holds no secret."""


def secret_path(home: Path, name: str) -> Path:
    """Return the file a `file:name` reference reads."""
    return home / SECRETS_DIR / name


def resolve_secret(ref: str, *, home: Path) -> str:
    """Return the secret a reference names, refusing forms that others could read."""
    kind, _, name = ref.partition(":")
    if kind == "env":
        value = os.environ.get(name)
        if not value:
            raise SecretRefError(f"the chat secret {ref} is not set")
        return value
    if kind == "file":
        return _read_owner_only(ref, secret_path(home, name))
    if kind == "block":
        raise SecretRefError(
            f"the chat secret {ref} is a Prefect Secret block, which any Prefect API client can "
            f"read, so Remedy no longer reads it: write its value to "
            f"{secret_path(home, name)} (mode 0600), set the stakeholder's secret_ref to "
            f"file:{name} in the directory and load it again, then delete the block"
        )
    raise SecretRefError("the chat secret reference is neither env:NAME nor file:name")


def _read_owner_only(ref: str, path: Path) -> str:
    if "/" in ref or ref.endswith(":") or path.name in (".", ".."):
        raise SecretRefError(f"the chat secret {ref} is not a plain file name")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise SecretRefError(f"the chat secret {ref}: there is no file {path}") from None
    except OSError as exc:
        problem = f"the chat secret {ref}: cannot read {path} ({exc.strerror})"
        raise SecretRefError(problem) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            raise SecretRefError(
                f"the chat secret {ref}: {path} is not a file owned by the user sending messages"
            )
        if stat.S_IMODE(info.st_mode) != 0o600:
            raise SecretRefError(
                f"the chat secret {ref}: {path} must be readable by its owner only; "
                f"run `chmod 600 {path}`"
            )
        value = os.read(fd, MAX_BYTES).decode("utf-8", errors="replace").strip()
    finally:
        os.close(fd)
    if not value:
        raise SecretRefError(f"the chat secret {ref}: {path} is empty")
    return value
