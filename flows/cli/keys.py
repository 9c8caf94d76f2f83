"""`remedy key rotate` and `remedy key status`: the master key rotated without breaking work in
flight, and what each key holds (docs/security.md, Keys: per-case data keys and rotation)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from cyclopts import Parameter

from flows.cli.common import EXIT_FAILED, EXIT_OK, actor, fail, out
from flows.cli.ops import key_app


@key_app.command(name="rotate")
def key_rotate(
    *,
    new_key_file: Annotated[
        Path | None,
        Parameter(
            help="A file (mode 0600) holding the new Fernet key, e.g. from your secret store; "
            "default: a new key is generated."
        ),
    ] = None,
) -> int:
    """Put a new encryption key first and re-encrypt under it: every case's data key is
    re-wrapped and what the old key sealed is sealed again, in batches. Pending approval codes and
    links keep working. Run it again if it was interrupted: it finishes the same rotation."""
    from tasks.context import utcnow
    from tasks.store.key_rotation import RotationError, rotate_keys
    from tasks.store.vault import read_key_text

    new_key = read_key_text(new_key_file) if new_key_file is not None else None
    try:
        result = rotate_keys(now=utcnow(), new_key=new_key, actor=actor())
    except RotationError as exc:
        return fail(str(exc))
    status = result.status
    out.print(
        ("A new key now stands first. " if result.added_key else "")
        + f"Re-wrapped {result.rewrapped} case keys and re-encrypted {result.resealed} values."
    )
    if not result.finished:
        return fail(
            f"{status.under_old} values are still under an older key (written meanwhile, or the "
            "run was interrupted): run `remedy key rotate` again before removing any key."
        )
    if status.unreadable:
        fail(f"{status.unreadable} values open with none of the configured keys ")
    if status.keys > 1:
        out.print(
            "Everything is under the first key: the older key(s) can now be removed from the key "
            "file (keep only its first line), once every Remedy process has been restarted. Keep "
            "an offline copy of an old key only if old backups must stay readable."
        )
    return EXIT_OK


@key_app.command(name="status")
def key_status_command() -> int:
    """Show how many case keys and values each configured key holds (counts only, no data)."""
    from rich.table import Table

    from tasks.store.key_rotation import key_status

    status = key_status()
    table = Table("key", "case keys", "values sealed directly")
    for n in range(status.keys):
        label = f"key {n + 1}" + (" (current)" if n == 0 else "")
        table.add_row(label, str(status.case_keys[n]), str(status.values[n]))
    out.print(table)
    out.print(
        f"{status.case_sealed} values sealed with their case keys; "
        f"{status.case_keys_destroyed} case keys destroyed; {status.unreadable} values unreadable."
    )
    if status.under_old:
        out.print(f"{status.under_old} still under an older key: run `remedy key rotate`.")
    return EXIT_OK if not status.unreadable else EXIT_FAILED
