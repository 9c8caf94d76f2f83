"""A sweep SIGKILLed anywhere loses no reminder and sends again at most the one in flight.

Real parts: the case store (SQLite and PostgreSQL), an SMTP catcher and a chat receiver on
127.0.0.1, and the sweep in a process of its own (doing what monitor-milestones does per case,
without Prefect), killed with SIGKILL:

- after its transaction committed, while it delivers: the reminder keys and the outbox rows exist
  together, the rows the dead sweep claimed wait for its lease (on the wall clock, however late
  the sweep's moment) and the drain then sends each message once, bar the one in flight;
- before its commit: it leaves neither keys nor messages, and the next sweep sends them all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from demo.catchers import ChatReceiver, MailCatcher
from flows.local.stack import free_port
from models.enums import NotificationStatus
from models.tables import Notification, PlanAction, ReminderSent
from tests.conftest import ROOT, Store, _clear_caches
from tests.integration.factories import Clock, rows, to_implementing

LEASE_SECONDS = 2  # REMEDY_DELIVERY_LEASE_SECONDS: short, so the test waits for a real one
IN_PLAY = 4  # milestones overdue at the sweep's moment
KILL_AT = 5  # the sweep dies when its fifth e-mail reaches the server, before it hears "250"


# One sweep as of a moment, case by case as monitor-case runs it (flows/monitor_milestones.py),
# without Prefect; the drain is told the sweep's moment, as monitor-case told it before leases went
# on the wall clock: the lease must not heed it. Given a file, the process touches it and stops in
# the last moment of the transaction that writes the reminder keys, for the test to kill it there.
SWEEP = """
import sys, time
from datetime import datetime
from tasks.drain import deliver_due
from tasks.monitoring.sweep import check_case, find_due

if len(sys.argv) > 2:
    from pathlib import Path
    from sqlalchemy import event, func, select
    from sqlalchemy.orm import Session
    from models.tables import ReminderSent

    @event.listens_for(Session, "before_commit")
    def hold(session):
        if session.execute(select(func.count()).select_from(ReminderSent)).scalar_one():
            Path(sys.argv[2]).touch()
            time.sleep(600)

at = datetime.fromisoformat(sys.argv[1])
for ref, items in sorted(find_due(now=at).by_case.items()):
    check_case(ref, items, now=at)
    deliver_due(now=at, case_ref=ref)
"""


def _sweep(at: datetime) -> None:
    """The same sweep in this process (the catch-up or next one)."""
    from tasks.drain import deliver_due
    from tasks.monitoring.sweep import check_case, find_due

    for ref, items in sorted(find_due(now=at).by_case.items()):
        check_case(ref, items, now=at)
        deliver_due(now=at, case_ref=ref)


@pytest.fixture
def receivers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[MailCatcher, ChatReceiver]]:
    """A slow mail catcher that can kill a sender, and a chat receiver."""
    catcher = MailCatcher(port=free_port()).start()
    chat = ChatReceiver(port=free_port()).start()
    monkeypatch.setenv("REMEDY_SMTP_URL", catcher.url())
    monkeypatch.setenv("REMEDY_CHAT_OPS", f"json://127.0.0.1:{chat.port}/hooks/ops")
    monkeypatch.setenv("REMEDY_DELIVERY_LEASE_SECONDS", str(LEASE_SECONDS))
    _clear_caches()
    yield catcher, chat
    catcher.stop()
    chat.stop()


def _overdue_case() -> tuple[datetime, set[str]]:
    """A case implementing its plan with four milestones in play, its messages so far out of
    the way; return a moment a month after the four were due (each overdue and escalated: 16
    reminders) and the outbox's keys so far."""
    import sqlalchemy as sa

    from tasks.steps.implement import activate_plan
    from tasks.store.db import unit_of_work

    case = to_implementing(Clock())
    activate_plan(case.ref, now=case.clock.tick())
    actions = sorted(rows(PlanAction, PlanAction.case_id == case.case().id), key=lambda a: a.key)
    last = max(a.due_on for a in actions[:IN_PLAY])
    at = datetime(last.year, last.month, last.day, 9, tzinfo=UTC) + timedelta(days=30)
    with unit_of_work() as session:
        for action in actions[IN_PLAY:]:  # the others are due long after the sweep's moment
            action.due_on = last + timedelta(days=400)
            session.add(action)
        # what the case's steps sent is not this test's business (a drain would have sent it)
        session.execute(sa.update(Notification).values(status=NotificationStatus.DELIVERED))
    return at, {n.idempotency_key for n in rows(Notification)}


def _start_sweep(
    at: datetime, tmp_path: Path, *, hold: Path | None = None
) -> subprocess.Popen[bytes]:
    args = [at.isoformat()] + ([str(hold)] if hold else [])
    with (tmp_path / "sweep.err").open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-c", SWEEP, *args],
            cwd=ROOT,
            env=os.environ.copy(),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def _received(catcher: MailCatcher, chat: ChatReceiver) -> Counter[str]:
    """How often each idempotency key arrived, by e-mail or chat."""
    keys = [str(m["X-Remedy-Key"]) for m in catcher.messages]
    keys += [r["headers"]["x-remedy-key"] for r in chat.delivered()]
    return Counter(keys)


def _new_messages(before: set[str]) -> list[Notification]:
    return [n for n in rows(Notification) if n.idempotency_key not in before]


def test_a_sweep_killed_while_delivering_loses_no_reminder(
    store: Store, receivers: tuple[MailCatcher, ChatReceiver], tmp_path: Path
) -> None:
    from tasks.drain import deliver_due

    catcher, chat = receivers
    at, before = _overdue_case()
    catcher.messages.clear()
    chat.requests.clear()
    sweep: list[subprocess.Popen[bytes]] = []
    killed: list[datetime] = []

    def slow_and_deadly(_message: EmailMessage) -> None:
        time.sleep(0.05)  # a slow server: the sweep is mid-delivery for a while
        if len(catcher.messages) == KILL_AT and sweep and not killed:
            os.kill(sweep[0].pid, signal.SIGKILL)
            killed.append(datetime.now(UTC))

    catcher.on_message = slow_and_deadly
    sweep.append(_start_sweep(at, tmp_path))
    try:
        assert sweep[0].wait(timeout=300) == -signal.SIGKILL, (tmp_path / "sweep.err").read_text()
    finally:
        sweep[0].kill()  # nothing if it is dead already
    in_flight = str(catcher.messages[KILL_AT - 1]["X-Remedy-Key"])

    # the keys were committed with their messages: every key has its messages in the outbox
    messages = _new_messages(before)
    keys = {r.key for r in rows(ReminderSent)}
    assert len(messages) == 4 * IN_PLAY and len(keys) == 2 * IN_PLAY
    assert {n.idempotency_key.rsplit(":", 2)[0] for n in messages} == keys
    pending = [n for n in messages if n.status == NotificationStatus.PENDING]
    assert pending and all(
        n.status == NotificationStatus.DELIVERED for n in messages if n not in pending
    )
    # the dead sweep's claims run out on the wall clock, one lease after they were taken
    lease = timedelta(seconds=LEASE_SECONDS)
    leases = [n.claimed_until for n in pending if n.claimed_until is not None]
    assert leases and all(until <= killed[0] + lease for until in leases), (leases, killed)

    _sweep(at)  # a catch-up sweep: the keys say "in the outbox", so it adds nothing
    assert len(_new_messages(before)) == len(messages)

    # the next drain after the lease (deliver-notifications runs every minute) sends them
    time.sleep(max(0.0, (max(leases) - datetime.now(UTC)).total_seconds()) + 0.05)
    deliver_due(now=datetime.now(UTC))

    received = _received(catcher, chat)
    assert set(received) == {n.idempotency_key for n in messages}  # nothing lost
    repeated = [k for k, times in received.items() if times > 1]
    assert repeated in ([], [in_flight]) and received[in_flight] <= 2  # only the one in flight
    assert all(n.status == NotificationStatus.DELIVERED for n in _new_messages(before))


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)  # a transaction is one on both
def test_a_sweep_killed_before_its_commit_leaves_the_reminders_to_the_next(
    store: Store, receivers: tuple[MailCatcher, ChatReceiver], tmp_path: Path
) -> None:
    catcher, chat = receivers
    at, before = _overdue_case()
    catcher.messages.clear()
    chat.requests.clear()
    marker = tmp_path / "holding"
    sweep = _start_sweep(at, tmp_path, hold=marker)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert sweep.poll() is None, (tmp_path / "sweep.err").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        sweep.kill()  # in its transaction, or whatever went wrong
    assert sweep.wait(timeout=60) == -signal.SIGKILL

    assert rows(ReminderSent) == [] and _new_messages(before) == []  # neither keys nor messages
    assert not catcher.messages and not chat.requests

    _sweep(at)  # the next sweep
    messages = _new_messages(before)
    assert len(messages) == 4 * IN_PLAY
    assert {n.idempotency_key.rsplit(":", 2)[0] for n in messages} == {
        r.key for r in rows(ReminderSent)
    }
    received = _received(catcher, chat)
    assert received == Counter({n.idempotency_key: 1 for n in messages})
