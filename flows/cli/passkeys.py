"""`remedy passkey invite|confirm|list|revoke`: approvers' passkeys for the approval page.

The work is in tasks/web/enrolment.py; every change is audited on the system chain, as the
operator the directory maps this operating-system account to.
"""

from __future__ import annotations

from typing import Annotated

from cyclopts import App, Parameter
from rich.table import Table

from flows.cli.common import EXIT_OK, fail, operator, out

passkey_app = App(name="passkey", help="Approvers' passkeys for the approval page.")


def _when(value: object) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if hasattr(value, "strftime") else "-"


@passkey_app.command(name="invite")
def passkey_invite(
    key: str,
    *,
    case: Annotated[
        str | None,
        Parameter(help="The case the invitation goes out under (default: the person's newest)."),
    ] = None,
) -> int:
    """Invite a stakeholder to add a passkey: a link by e-mail, a one-time code by chat.

    Someone without chat gets the link only; confirm it is them with `remedy passkey confirm`.
    A new invitation withdraws the person's earlier one.
    """
    from tasks.actors import ActorNotAllowed
    from tasks.context import utcnow
    from tasks.web.enrolment import BY_CODE, EnrolmentError, invite

    try:
        sent = invite(key, case_ref=case, now=utcnow(), operator=operator())
    except (ActorNotAllowed, EnrolmentError) as exc:
        return fail(str(exc))
    out.print(
        f"Invited {sent.key} to add a passkey (case {sent.case_ref}), valid until "
        f"{_when(sent.expires_at)}: the link goes by e-mail"
        + (", its one-time code by chat." if sent.proof == BY_CODE else ".")
    )
    if sent.proof != BY_CODE:
        out.print(
            f"{sent.key} has no second channel for a code: once you have spoken with them, a "
            f"case lead of {sent.case_ref} confirms with `remedy passkey confirm {sent.key}`."
        )
    return EXIT_OK


@passkey_app.command(name="confirm")
def passkey_confirm(key: str) -> int:
    """Confirm, as a case lead, that a stakeholder's open invitation is theirs (instead of a code).

    Do it only while speaking with the person: it lets whoever holds the invitation's link add a
    passkey in their name.
    """
    from tasks.actors import ActorNotAllowed
    from tasks.context import utcnow
    from tasks.web.enrolment import EnrolmentError, confirm

    try:
        done = confirm(key, now=utcnow(), operator=operator())
    except (ActorNotAllowed, EnrolmentError) as exc:
        return fail(str(exc))
    out.print(
        f"Confirmed {done.key}'s invitation (case {done.case_ref}): they can add their passkey "
        f"from the link until {_when(done.expires_at)}."
    )
    return EXIT_OK


@passkey_app.command(name="list")
def passkey_list() -> int:
    """List active stakeholders with their passkeys and open invitations."""
    from tasks.context import utcnow
    from tasks.web.enrolment import holders

    table = Table("stakeholder", "passkeys", "enrolled via", "last used", "invitation")
    for row in holders(now=utcnow()):
        invitation = "-"
        if row.invitation_until is not None:
            invitation = f"until {_when(row.invitation_until)} ({row.invitation_proof})"
        table.add_row(
            row.key,
            str(row.passkeys),
            row.enrolled_via or "-",
            _when(row.last_used_at),
            invitation,
        )
    out.print(table)
    return EXIT_OK


@passkey_app.command(name="revoke")
def passkey_revoke(key: str) -> int:
    """Revoke all of a stakeholder's passkeys (a lost or shared device) and open invitations."""
    from tasks.actors import ActorNotAllowed
    from tasks.context import utcnow
    from tasks.web.enrolment import EnrolmentError, revoke

    try:
        count = revoke(key, now=utcnow(), operator=operator())
    except (ActorNotAllowed, EnrolmentError) as exc:
        return fail(str(exc))
    out.print(
        f"Revoked {count} passkey(s) of {key}. Until they add a new one (`remedy passkey invite "
        f"{key}`), decisions that need a passkey wait for them."
    )
    return EXIT_OK
