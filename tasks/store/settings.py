"""Settings the case store carries itself: whether it is a simulation.

Only a store marked as a simulation may be swept for a moment an operator chooses (`remedy
monitor --now`): such a sweep writes audit events dated at that moment and uses up the reminder
keys of the thresholds it crosses, which a store of real cases must never have. The mark lives in
the store, not in the settings of one process, so every process reading the store agrees on it;
setting or clearing it is audited on the system chain.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, func, select

from models.security import StoreSetting
from models.tables import RemediationCase
from tasks.store.audit import SYSTEM_CHAIN, append_audit
from tasks.store.db import read_only, unit_of_work

SIMULATION = "simulation"


class SimulationNotAllowed(Exception):
    """A chosen moment on a store of real cases, or marking a store of cases without --force."""


def is_simulation(session: Session) -> bool:
    """Tell whether the store says it is a simulation (inside the caller's session)."""
    row = session.get(StoreSetting, SIMULATION)
    return row is not None and row.value.get("on") is True


def store_is_simulation() -> bool:
    """Tell whether the configured case store says it is a simulation."""
    with read_only() as session:
        return is_simulation(session)


def require_simulation() -> None:
    """Refuse a sweep at a chosen moment unless the store says it is a simulation."""
    if not store_is_simulation():
        raise SimulationNotAllowed(
            "this case store is not a simulation: its sweeps run on the real clock only "
            "(`remedy db simulation on` marks a store made for trying things out)"
        )


def mark_simulation(on: bool, *, actor: str, now: datetime, force: bool = False) -> bool:
    """Mark the store as a simulation (or not), audited; False if it already was so.

    A store that holds cases is marked only with `force`: its cases may be real, and a sweep at a
    chosen moment would date their audit in that moment and use up their reminders.
    """
    with unit_of_work() as session:
        if is_simulation(session) == on:
            return False
        cases = int(session.exec(select(func.count()).select_from(RemediationCase)).one())
        if on and cases and not force:
            raise SimulationNotAllowed(
                f"the case store holds {cases} case(s); a simulated sweep would date their audit "
                "and use up their reminders. Mark it only if none is real (--force)."
            )
        row = session.get(StoreSetting, SIMULATION) or StoreSetting(
            key=SIMULATION, set_at=now, set_by=actor
        )
        row.value, row.set_at, row.set_by = {"on": on}, now, actor[:80]
        session.add(row)
        append_audit(
            session,
            chain=SYSTEM_CHAIN,
            actor=actor,
            action="store.simulation_on" if on else "store.simulation_off",
            at=now,
            subject_type="store_setting",
            subject_id=SIMULATION,
            details={"cases": cases, "forced": force and on},
        )
        return True
