"""Who runs a command: the operating-system account, the stakeholder it is, whom it may name.

A command that speaks in a person's name (`--by`, `--agreed-by`) takes that person from the
account running it, as the directory maps accounts to stakeholders (`os_users`); it may name
someone else only where the directory lets that stakeholder act for them (`acts_for`, "*" for
anyone): a case lead who records what the victims' representative agreed to on the phone.

The command line reads the account from the process (flows/cli/common.py); everything here takes
it as an argument, so that tests name the account they mean and no setting can stand in for it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from sqlmodel import Session, select

from models.intake import ANYONE
from models.tables import Stakeholder
from tasks.store.db import read_only

__all__ = ["ANYONE", "ActorNotAllowed", "Operator", "operator_in", "resolve_operator"]


class ActorNotAllowed(Exception):
    """The account may not act, or not in that name; the message says what would allow it."""


class Operator(BaseModel):
    """The person at the terminal: their operating-system account and their stakeholder key."""

    model_config = ConfigDict(frozen=True)

    os_user: str
    key: str
    acts_for: tuple[str, ...] = ()

    def may_speak_for(self, key: str) -> bool:
        """Whether this person may name `key`: themselves, or whom the directory lets them."""
        return key == self.key or ANYONE in self.acts_for or key in self.acts_for

    def speaks_for(self, named: str | None, option: str = "--by") -> str:
        """Return whom a command names with `option`; this person when it names nobody."""
        if named is None or named == self.key:
            return self.key
        if not self.may_speak_for(named):
            raise ActorNotAllowed(
                f"{option} {named}: you are {self.key} (operating-system user {self.os_user}), "
                f"who may not act for {named}. Name yourself, or have {named}'s word recorded "
                f"by someone whose directory entry lists {named} under acts_for."
            )
        return named

    def audit_details(self) -> dict[str, str]:
        """Return what an audit event keeps of who typed the command."""
        return {"os_user": self.os_user, "operator": f"stakeholder:{self.key}"}


def operator_in(session: Session, os_user: str) -> Operator:
    """Return the active stakeholder an operating-system account is, or say how to map it."""
    rows = session.exec(
        select(Stakeholder.key, Stakeholder.os_users, Stakeholder.acts_for, Stakeholder.active)
    ).all()
    mapped = [(key, acts, active) for key, users, acts, active in rows if os_user in users]
    active = [(key, acts) for key, acts, on in mapped if on]
    if len(active) == 1:
        [(key, acts_for)] = active
        return Operator(os_user=os_user, key=key, acts_for=tuple(acts_for))
    if len(active) > 1:
        keys = ", ".join(sorted(key for key, _ in active))
        raise ActorNotAllowed(
            f"the operating-system user {os_user} is mapped to several stakeholders ({keys}); "
            "keep it in the os_users of one of them and load the directory again"
        )
    if mapped:
        raise ActorNotAllowed(
            f"the operating-system user {os_user} is mapped to {mapped[0][0]}, who is not active"
        )
    raise ActorNotAllowed(
        f"the operating-system user {os_user} is not a stakeholder in the directory: add "
        f"`os_users: [{os_user}]` to your entry in the directory file and load it again "
        "(`remedy directory load FILE`)"
    )


def resolve_operator(os_user: str) -> Operator:
    """Return who an operating-system account is in the directory (see `operator_in`)."""
    with read_only() as session:
        return operator_in(session, os_user)
