"""`remedy case hold-data|release-data` and `remedy person export|erase`: legal holds on a case's
data, and an affected person's access and erasure requests (docs/security.md, Retention and
erasure). Registered on the `case` and `person` apps by flows/cli/__init__.py."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

from cyclopts import Parameter

from flows.cli.common import BY, EXIT_OK, fail, operator, out

REASON = Parameter(help="Why (kept in the audit): never a person's name or story.")


def hold_data(
    reference: str, *, reason: Annotated[str, REASON], by: Annotated[str | None, BY] = None
) -> int:
    """Put a legal hold on the case's data: retention and erasure stop until it is released
    (the case lead or a senior approver)."""
    from tasks.actors import ActorNotAllowed
    from tasks.context import utcnow
    from tasks.store.retention import RetentionError, set_hold

    try:
        who = operator()
        set_hold(reference, reason=reason, by=who.speaks_for(by), now=utcnow(), operator=who)
    except (ActorNotAllowed, RetentionError) as exc:
        return fail(str(exc))
    out.print(f"{reference}: legal hold set; retention and erasure wait until it is released.")
    return EXIT_OK


def release_data(
    reference: str, *, reason: Annotated[str, REASON], by: Annotated[str | None, BY] = None
) -> int:
    """Release the case's legal hold: the next sweep applies its retention periods again."""
    from tasks.actors import ActorNotAllowed
    from tasks.context import utcnow
    from tasks.store.retention import RetentionError, release_hold

    try:
        who = operator()
        release_hold(reference, reason=reason, by=who.speaks_for(by), now=utcnow(), operator=who)
    except (ActorNotAllowed, RetentionError) as exc:
        return fail(str(exc))
    out.print(f"{reference}: legal hold released; retention applies again at the next sweep.")
    return EXIT_OK


def person_export(
    reference: str,
    pseudonym: str,
    *,
    by: Annotated[str | None, BY] = None,
    out_file: Annotated[
        Path | None,
        Parameter(name="--out", help="Write the JSON to this new file (0600), not to stdout."),
    ] = None,
) -> int:
    """Export one affected person's own data, decrypted, as JSON (their access request, through
    the case lead or their representative); audited, without the data."""
    from tasks.actors import ActorNotAllowed
    from tasks.context import utcnow
    from tasks.store.person_data import export_person
    from tasks.store.retention import RetentionError

    fd = None
    if out_file is not None:  # made first: no export is audited that could not be written
        try:
            fd = os.open(out_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            return fail(f"cannot create {out_file} ({type(exc).__name__}); give a new file")
    try:
        who = operator()
        data = export_person(
            reference, pseudonym, by=who.speaks_for(by), now=utcnow(), operator=who
        )
    except (ActorNotAllowed, RetentionError) as exc:
        if fd is not None and out_file is not None:
            os.close(fd)
            out_file.unlink()
        return fail(str(exc))
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    if fd is None:
        print(text, end="")
        return EXIT_OK
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    out.print(
        f"{reference} {pseudonym}: their data written to {out_file} (mode 600).", markup=False
    )
    return EXIT_OK


def person_erase(
    reference: str,
    pseudonym: str,
    *,
    reason: Annotated[str, REASON],
    by: Annotated[str | None, BY] = None,
) -> int:
    """Erase one affected person's identity, views and payment references at their request (the
    pseudonym and figures stay); refused under a legal hold; audited."""
    from tasks.actors import ActorNotAllowed
    from tasks.context import utcnow
    from tasks.store.person_data import erase_person
    from tasks.store.retention import RetentionError

    try:
        who = operator()
        done = erase_person(
            reference,
            pseudonym,
            reason=reason,
            by=who.speaks_for(by),
            now=utcnow(),
            operator=who,
        )
    except (ActorNotAllowed, RetentionError) as exc:
        return fail(str(exc))
    out.print(
        f"{reference} {pseudonym}: erased (identity: {'yes' if done.identity else 'none held'}, "
        f"views: {done.views}, payment references: {done.payment_references}).",
        markup=False,
    )
    return EXIT_OK
