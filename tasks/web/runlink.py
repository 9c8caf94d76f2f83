"""Where a message's link to a waiting decision's run leads: the approval page's `GET /r/{token}`.

Messages never link a flow run directly: a run that crashed is replaced by the repair, and a sent
message cannot change. They link this address instead, one per decision request. It looks up the
run waiting on the request now (`DecisionRequest.flow_run_id`, which the repair updates) and sends
the browser to its page in the Prefect UI, or says plainly that the decision no longer waits
(decided, replaced by a newer round, no longer needed), naming neither case nor person.

The token (tasks/store/links.py) is sealed, so it cannot be made up and does not reveal the
request; it works any number of times and does not expire, since all it grants is the run's
address, and the Prefect UI asks for its own credential. Following it writes nothing; a token we
never issued is junk, counted for its client address (tasks/web/ratelimit.py).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import httpx

from models.enums import DecisionRequestStatus
from models.tables import DecisionRequest
from tasks.store.db import read_only
from tasks.store.links import LinkInvalidError, read_run_link_token
from tasks.web.ratelimit import count_junk
from tasks.web.refusals import TAMPERED

log = logging.getLogger("remedy.approval_page")


@dataclass(frozen=True)
class RunLinkAnswer:
    """Where a run link leads: a redirect to the waiting run, or a page saying why not."""

    status: int
    redirect: str | None = None
    title: str = ""
    message: str = ""


NO_LONGER_WAITING = {
    DecisionRequestStatus.DECIDED: RunLinkAnswer(
        410,
        title="This decision was taken",
        message="Nothing waits for it any more, so there is no run to show. The case lead can "
        "tell you more.",
    ),
    DecisionRequestStatus.SUPERSEDED: RunLinkAnswer(
        410,
        title="A newer request replaced this one",
        message="The decision was asked again in a newer round. Use the links in the newest "
        "message about it.",
    ),
    DecisionRequestStatus.CANCELLED: RunLinkAnswer(
        410,
        title="This decision is no longer needed",
        message="The case left the step that asked for it (it was put on hold, closed early or "
        "revised). A new message reaches you if the step asks again.",
    ),
}
RESTARTING = RunLinkAnswer(
    409,
    title="The run waiting for this decision is being restarted",
    message="The run that waited for this decision stopped. Remedy starts another at its next "
    "check, and this link then leads to it: open it again later. The decision still waits.",
)
NOT_IN_PREFECT = RunLinkAnswer(
    409,
    title="This decision waits, but not in the Prefect UI",
    message="No run in the Prefect UI shows this decision now. Decide with the approval-page "
    "link in your message, or ask the case lead.",
)


def run_page(flow_run_id: uuid.UUID) -> str | None:
    """Return the Prefect UI page of a run (as the CLI links it), or None without a Prefect UI."""
    from tasks.orchestration.runs import flow_run_link

    return flow_run_link(flow_run_id)


def run_gone(flow_run_id: uuid.UUID) -> bool:
    """Tell whether Prefect says a run can no longer go on (ended, crashed, or unknown to it).

    False when Prefect cannot be asked: the browser goes on to the UI, which says what it knows.
    """
    from prefect.exceptions import PrefectException

    from tasks.orchestration.runs import prefect_configured, read_run

    if not prefect_configured():  # never start a temporary server to ask
        return False
    try:
        run = read_run(flow_run_id)
    except (httpx.HTTPError, OSError, PrefectException) as exc:
        log.warning(
            "run link: Prefect not asked about run %s (%s)", flow_run_id, type(exc).__name__
        )
        return False
    return run is None or (run.state is not None and run.state.is_final())


def _request(request_id: uuid.UUID) -> DecisionRequest | None:
    with read_only() as session:
        return session.get(DecisionRequest, request_id)


def follow_run_link(
    token: str, *, now: datetime, run_gone: Callable[[uuid.UUID], bool] = run_gone
) -> RunLinkAnswer:
    """Return where a run link leads now, or raise LinkRefusedError for a token we never issued."""
    try:
        request_id = read_run_link_token(token)
    except LinkInvalidError:
        count_junk("tampered", now=now)
        raise TAMPERED.error("tampered") from None
    request = _request(request_id)
    if request is None:
        count_junk("unknown-request", now=now)
        raise TAMPERED.error("unknown-request")
    if request.status != DecisionRequestStatus.WAITING:
        return NO_LONGER_WAITING[request.status]
    target = run_page(request.flow_run_id) if request.flow_run_id else None
    if request.flow_run_id is None or target is None:
        return NOT_IN_PREFECT
    if run_gone(request.flow_run_id):
        # between a crash and its repair the store still names the dead run: nobody goes there
        return RESTARTING
    return RunLinkAnswer(303, redirect=target)
