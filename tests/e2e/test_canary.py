"""A planted canary name and contact go through the whole pipeline and never leak.

The canary is in the report's identity fields, the reporter's contact and the narrative. Only
e-mails to roles that may see the narrative may show it (the narrative, never the identity
fields); no chat message, no other e-mail, and nothing in Prefect (run names, parameters, logs,
artifacts, run inputs, events) may hold any of it.
"""

from __future__ import annotations

import json
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from demo.scripted import ScriptedStakeholders
from models.enums import CaseState
from tests.e2e.conftest import E2E
from tests.e2e.helpers import case_runs, open_case, wait_for

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

NAME = "Quillon Vexbrindle"
CONTACT = "quillon.vexbrindle.4471@example.net"
DOCUMENT = "QVX-4471-CANARY"
NARRATIVE_ONLY = "Vexbrindle"  # the narrative mentions the surname only
ALWAYS_SECRET = (NAME, CONTACT, DOCUMENT, "quillon", "QVX-4471")
# who may see the narrative (notifications/routing.toml [visibility])
NARRATIVE_READERS = {
    "lena.lead@acme.example",
    "amani.verifier@audit.example",
    "grace.advocate@safepassage.example",
}


def clean(text: str, where: str, extra: tuple[str, ...] = ()) -> None:
    lowered = text.lower()
    for canary in (*ALWAYS_SECRET, *extra):
        assert canary.lower() not in lowered, f"canary {canary!r} leaked into {where}"


def mail_text(message: EmailMessage) -> str:
    chunks = [f"{k}: {v}" for k, v in message.items()]
    for part in message.walk():
        if part.get_content_maintype() == "text":
            chunks.append(part.get_content())
    return "\n".join(chunks)


def test_the_canary_never_leaks(live: E2E, examples: Path, tmp_path: Path) -> None:
    ref = open_case(
        examples,
        tmp_path,
        description=f"Mr {NARRATIVE_ONLY} says his documents were taken; ask Safe Passage.",
        reporter={"name": f"{NAME} (brother)", "contact": CONTACT, "relation": "family"},
        affected_persons=[
            {
                "age_band": "25_to_34",
                "sex": "male",
                "nationality": "CD",
                "identity": {"name": NAME, "contact": CONTACT, "document_numbers": [DOCUMENT]},
            },
            {"age_band": "15_to_17", "sex": "female", "nationality": "CD"},
        ],
    )
    ScriptedStakeholders().drive(ref, until=CaseState.LESSONS_CAPTURED, timeout=600)
    wait_for(
        lambda: all(r.state and r.state.is_final() for r in case_runs(ref)),
        what="every run of the case to end",
    )
    from tasks.context import utcnow
    from tasks.drain import deliver_due

    deliver_due(now=utcnow())  # whatever is still in the outbox

    # e-mail: identities never; the narrative only to roles that may read it
    mails = [m for m in live.mail.messages if ref in str(m["Subject"])]
    assert len(mails) > 10
    readers_saw = False
    for message in mails:
        to, text = str(message["To"]), mail_text(message)
        if to in NARRATIVE_READERS:
            clean(text, f"e-mail to {to}")
            readers_saw = readers_saw or NARRATIVE_ONLY in text
        else:
            clean(text, f"e-mail to {to}", extra=(NARRATIVE_ONLY,))
    assert readers_saw, "the case lead should have had the narrative in the case_opened e-mail"
    assert {str(m["To"]) for m in mails} - NARRATIVE_READERS  # others did get mail too

    # chat: references and links only
    chats = [r for r in live.chat.requests if ref in r["body"]]
    assert chats
    for request in chats:
        clean(request["body"], "a chat message", extra=(NARRATIVE_ONLY, "P-01", "P-02"))

    # Prefect: run names, parameters, logs, artifacts, run inputs, events
    api = live.stack.api_url
    runs = case_runs(ref)
    assert len(runs) >= 7
    ids = [str(r.id) for r in runs]
    dumps: dict[str, Any] = {
        "runs": [r.model_dump(mode="json") for r in runs],
        "logs": _all(api, "/logs/filter", {"logs": {"flow_run_id": {"any_": ids}}}),
        "task runs": _all(api, "/task_runs/filter", {"flow_runs": {"id": {"any_": ids}}}),
        "artifacts": _all(api, "/artifacts/filter", {"artifacts": {"key": {"like_": "case-"}}})
        + _all(api, "/artifacts/filter", {"flow_runs": {"id": {"any_": ids}}}),
        "inputs": [
            httpx.post(f"{api}/flow_runs/{i}/input/filter", json={"prefix": ""}, timeout=30).json()
            for i in ids
        ],
        "events": httpx.post(
            f"{api}/events/filter",
            json={"filter": {"any_resource": {"id_prefix": ["remedy.case."]}}, "limit": 50},
            timeout=30,
        ).json(),
    }
    assert dumps["logs"] and dumps["inputs"] and dumps["artifacts"]
    for what, data in dumps.items():
        clean(json.dumps(data, ensure_ascii=False), f"Prefect {what}", extra=(NARRATIVE_ONLY,))


def _all(api: str, path: str, body: dict[str, Any]) -> list[Any]:
    rows: list[Any] = []
    offset = 0
    while True:
        page = httpx.post(
            f"{api}{path}", json={**body, "limit": 200, "offset": offset}, timeout=30
        ).json()
        rows += page
        if len(page) < 200:
            return rows
        offset += 200
