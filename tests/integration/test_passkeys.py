"""Passkeys for approvers, below Prefect: enrolment from an invitation, and the checks of what an
authenticator answers, on real case stores (SQLite and PostgreSQL).

The authenticator is a software one (demo/softkey.py: ES256, "none" attestation): it answers the
relying party's options as a browser's platform authenticator would, and can be made to answer
wrongly (another challenge, origin or key). The page's HTTP layer is driven with Starlette's
TestClient, with Prefect pointed where nothing listens (a decision that got past every check
ends in a 503 and gives its link back).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlmodel import select
from starlette.exceptions import StarletteDeprecationWarning

from demo.softkey import SoftAuthenticator, b64
from flows.web.app import create_app
from models.enums import DecisionKind, NotificationChannel, NotificationEvent, Role
from models.security import PasskeyCredential, PasskeyEnrolment, WebAuthnChallenge
from models.tables import ApprovalLink, AuditEvent, Notification
from tasks.actors import Operator
from tasks.context import utcnow
from tasks.store.db import read_only, unit_of_work
from tasks.store.links import link_token
from tasks.store.vault import get_vault
from tasks.web.enrol_page import complete_enrolment, enrolment_options, resolve_enrolment
from tasks.web.enrolment import EnrolmentError, confirm, holders, invite, revoke
from tasks.web.gate import CHANNEL_PASSKEY, decision_options, prove_decider
from tasks.web.guard import csrf_token
from tasks.web.no_passkey import tell_case_lead_without_passkey
from tasks.web.passkeys import authentication_options, relying_party
from tasks.web.refusals import LinkRefusedError
from tasks.web.resolve import LinkView, resolve_link
from tests.conftest import ROOT, Store, _clear_caches
from tests.integration.factories import (
    LEAD,
    SENIOR,
    Clock,
    SampleCase,
    rows,
    script,
    stakeholder_id,
)
from tests.integration.test_web_links import (
    changed,
    link_row,
    refusals,
    request_row,
    token_of,
    waiting_screening,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

BASE = "http://localhost:8686"
NOWHERE = "http://127.0.0.1:9/api"
LENA = Operator(os_user="lena", key=LEAD)
SOFIA = Operator(os_user="sofia", key=SENIOR)


@pytest.fixture(autouse=True)
def localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    """The approval page as a passkey needs it: addressed by a name (localhost), not an IP."""
    monkeypatch.setenv("REMEDY_APPROVAL_BASE_URL", BASE)
    _clear_caches()


# --- helpers -------------------------------------------------------------------------------------


def outbox(event: NotificationEvent) -> list[Notification]:
    return rows(Notification, Notification.event == event.value)


def sent_code(enrolment_id: object) -> str:
    """The code as the person reads it in their chat message."""
    [row] = [
        n for n in outbox(NotificationEvent.PASSKEY_CODE) if str(enrolment_id) in n.idempotency_key
    ]
    code: str = get_vault().decrypt(row.context["code_ciphertext"])["code"]
    return code


def enrol_token(enrolment_id: object) -> str:
    with read_only() as session:
        enrolment = session.get(PasskeyEnrolment, enrolment_id)
        assert enrolment is not None and enrolment.link_id is not None
        link = session.get(ApprovalLink, enrolment.link_id)
        assert link is not None
        return link_token(link.id, link.expires_at)


def enrol(case: SampleCase, key: str, device: SoftAuthenticator, *, by: Operator = LENA) -> None:
    """Invite a person and add the device's passkey from the link (code or confirmation)."""
    clock = case.clock
    sent = invite(key, case_ref=case.ref, now=clock.tick(), operator=by)
    form: dict[str, list[str]] = {}
    if sent.proof == "code-by-chat":
        form["code"] = [sent_code(sent.enrolment_id)]
    else:
        confirm(key, now=clock.tick(), operator=LENA if key != LEAD else SOFIA)
    view = resolve_enrolment(enrol_token(sent.enrolment_id), now=clock.tick())
    options = enrolment_options(view, form, now=clock.tick())
    complete_enrolment(view, {"passkey": [device.create(options)]}, now=clock.tick())


def audit(chain: str, action: str) -> list[AuditEvent]:
    return [e for e in rows(AuditEvent, AuditEvent.chain == chain) if e.action == action]


def credentials(key: str) -> list[PasskeyCredential]:
    return rows(PasskeyCredential, PasskeyCredential.stakeholder_id == stakeholder_id(key))


def lead_link(case: SampleCase, request_id: object) -> tuple[LinkView, str]:
    from tests.integration.test_web_links import decide_link

    token = token_of(decide_link(request_id, LEAD))  # type: ignore[arg-type]
    return resolve_link(token, now=case.clock.tick()), token


def challenge_for(view: LinkView, now: datetime) -> str:
    return authentication_options(
        stakeholder_id=stakeholder_id(view.stakeholder_key), link_id=view.link_id, now=now
    )


def refusal_of(call: Any) -> LinkRefusedError:
    with pytest.raises(LinkRefusedError) as caught:
        call()
    return caught.value


# --- the relying party ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://localhost:8686", ("localhost", "http://localhost:8686")),
        ("https://approve.example.org/", ("approve.example.org", "https://approve.example.org")),
        (
            "https://Approve.Example.org:8443",
            ("approve.example.org", "https://approve.example.org:8443"),
        ),
        ("http://127.0.0.1:8686", None),
        ("http://[::1]:8686", None),
    ],
)
def test_the_relying_party_is_the_page_s_host_name(
    monkeypatch: pytest.MonkeyPatch, base: str, expected: tuple[str, str] | None
) -> None:
    from tasks.web.passkeys import PasskeyUnavailableError

    monkeypatch.setenv("REMEDY_APPROVAL_BASE_URL", base)
    _clear_caches()
    if expected is None:
        with pytest.raises(PasskeyUnavailableError, match="not an IP address"):
            relying_party()
    else:
        rp = relying_party()
        assert (rp.rp_id, rp.origin) == expected


# --- enrolment -----------------------------------------------------------------------------------


def test_an_invitation_sends_the_link_by_e_mail_and_the_code_only_by_chat(store: Store) -> None:
    from notifications.render import render
    from tasks.drain import render_context

    case, _, _ = waiting_screening(Clock())
    sent = invite(LEAD, case_ref=case.ref, now=case.clock.tick(), operator=LENA)

    [invited] = outbox(NotificationEvent.PASSKEY_INVITED)
    [code_row] = outbox(NotificationEvent.PASSKEY_CODE)
    assert invited.channel == NotificationChannel.EMAIL and "link_id" in invited.context
    assert "code_ciphertext" not in invited.context
    assert code_row.channel == NotificationChannel.CHAT and "link_id" not in code_row.context
    code = sent_code(sent.enrolment_id)
    with read_only() as session:
        [enrolment] = session.exec(select(PasskeyEnrolment)).all()
    assert enrolment.code_hash is not None and code not in enrolment.code_hash
    [event] = audit("system", "passkey.invited")
    assert event.actor == f"stakeholder:{LEAD}" and event.details["os_user"] == "lena"
    assert event.details["proof"] == "code-by-chat" and code not in json.dumps(event.details)

    # as delivered: the e-mail carries the enrolment link and no code; the chat the code only
    mail = render(
        "passkey_invited",
        fmt="text",
        locale=invited.locale,
        context=render_context(invited, case.ref, case.clock.now),
    )
    assert f"{BASE}/a/" in mail.body and code not in mail.body
    assert "one-time code, sent to you separately by chat" in mail.body
    chat = render(
        "passkey_code",
        fmt="md",
        locale=code_row.locale,
        context=render_context(code_row, case.ref, case.clock.now),
    )
    assert code in chat.body and "/a/" not in chat.body
    for locale in ("fr", "es"):
        from models.enums import Locale

        assert (
            code
            in render(
                "passkey_code",
                fmt="md",
                locale=Locale(locale),
                context=render_context(code_row, case.ref, case.clock.now),
            ).body
        )


def test_an_invitation_refuses_a_routing_that_sends_the_code_by_e_mail(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from notifications.routing import DEFAULT_ROUTING_PATH

    routing = DEFAULT_ROUTING_PATH.read_text().replace(
        '[events.passkey_code]\napprovers = ["chat"]',
        '[events.passkey_code]\napprovers = ["email", "chat"]',
    )
    (tmp_path / "routing.toml").write_text(routing)
    monkeypatch.setenv("REMEDY_ROUTING_FILE", str(tmp_path / "routing.toml"))
    _clear_caches()
    case, _, _ = waiting_screening(Clock())
    before = store.row_counts()
    with pytest.raises(EnrolmentError, match="passkey_code"):
        invite(LEAD, case_ref=case.ref, now=case.clock.tick(), operator=LENA)
    assert store.row_counts() == before


def test_a_passkey_added_with_the_code_then_confirms_a_decision(store: Store) -> None:
    case, request_id, _ = waiting_screening(Clock())
    device = SoftAuthenticator()

    enrol(case, LEAD, device)

    [stored] = credentials(LEAD)
    assert (
        stored.credential_id == b64(device.credential_id) and stored.enrolled_via == "code-by-chat"
    )
    assert stored.transports == ["internal"] and stored.revoked_at is None
    [enrolment] = rows(PasskeyEnrolment)
    assert enrolment.completed_at is not None and link_row(enrolment.link_id).used_at is not None
    [enrolled] = audit("system", "passkey.enrolled")
    assert enrolled.subject_id == str(stored.id) and enrolled.details["via"] == "code-by-chat"

    view, _ = lead_link(case, request_id)
    options = json.loads(challenge_for(view, case.clock.tick()))
    assert options["rpId"] == "localhost" and options["userVerification"] == "required"
    assert [c["id"] for c in options["allowCredentials"]] == [stored.credential_id]
    answer = device.get(json.dumps(options))
    assert prove_decider(view, {"passkey": [answer]}, now=case.clock.tick()) == CHANNEL_PASSKEY
    [after] = credentials(LEAD)
    assert after.sign_count == 1 and after.last_used_at is not None
    [verified] = audit(case.ref, "passkey.verified")
    assert verified.subject_id == str(view.link_id)
    assert link_row(view.link_id).used_at is None  # the page uses the link up when it submits


def test_wrong_codes_are_counted_and_lock_the_invitation_once(store: Store) -> None:
    case, _, _ = waiting_screening(Clock())
    sent = invite(LEAD, case_ref=case.ref, now=case.clock.tick(), operator=LENA)
    token, code = enrol_token(sent.enrolment_id), sent_code(sent.enrolment_id)
    view = resolve_enrolment(token, now=case.clock.tick())

    answers = []
    for _ in range(5):  # the policy's max_failed_attempts
        error = refusal_of(
            lambda: enrolment_options(view, {"code": ["WRONGCODE"]}, now=case.clock.tick())
        )
        answers.append(error.reason)
    assert answers == ["wrong-code"] * 4 + ["enrol-locked"]
    assert [e.details["failures"] for e in audit("system", "passkey.enrolment_locked")] == [5]
    # locked: the right code no longer helps, and the link says so (audited)
    assert (
        refusal_of(lambda: enrolment_options(view, {"code": [code]}, now=case.clock.tick())).reason
        == "enrol-locked"
    )
    assert (
        refusal_of(lambda: resolve_enrolment(token, now=case.clock.tick())).reason == "enrol-locked"
    )
    assert len(audit("system", "passkey.enrolment_locked")) == 1
    assert rows(WebAuthnChallenge) == []

    # a case lead's confirmation (while speaking with the person) replaces the code
    with pytest.raises(EnrolmentError, match="their own"):
        confirm(LEAD, now=case.clock.tick(), operator=LENA)
    with pytest.raises(EnrolmentError, match="only a case lead"):
        confirm(LEAD, now=case.clock.tick(), operator=SOFIA)
    device = SoftAuthenticator()
    with unit_of_work() as session:  # make sofia a case lead of the case for this once
        from models.tables import CaseMember

        session.add(
            CaseMember(
                case_id=case.case().id,
                stakeholder_id=stakeholder_id(SENIOR),
                role=Role.CASE_LEAD,
                added_at=case.clock.tick(),
            )
        )
    confirm(LEAD, now=case.clock.tick(), operator=SOFIA)
    view = resolve_enrolment(token, now=case.clock.tick())
    assert not view.needs_code and view.confirmed_by == SENIOR
    options = enrolment_options(view, {}, now=case.clock.tick())
    complete_enrolment(view, {"passkey": [device.create(options)]}, now=case.clock.tick())
    assert [c.enrolled_via for c in credentials(LEAD)] == [f"confirmed-by:{SENIOR}"]


def test_someone_without_a_second_channel_waits_for_the_case_lead(store: Store) -> None:
    case, _, _ = waiting_screening(Clock())
    sent = invite(SENIOR, case_ref=case.ref, now=case.clock.tick(), operator=LENA)
    assert sent.proof == "case-lead" and outbox(NotificationEvent.PASSKEY_CODE) == []
    token = enrol_token(sent.enrolment_id)
    view = resolve_enrolment(token, now=case.clock.tick())
    assert view.waits_for_lead and not view.needs_code
    assert (
        refusal_of(lambda: enrolment_options(view, {}, now=case.clock.tick())).reason
        == "not-confirmed"
    )
    assert rows(WebAuthnChallenge) == []

    confirm(SENIOR, now=case.clock.tick(), operator=LENA)
    [confirmed] = audit("system", "passkey.enrolment_confirmed")
    assert confirmed.details["stakeholder"] == SENIOR and confirmed.actor == f"stakeholder:{LEAD}"
    view = resolve_enrolment(token, now=case.clock.tick())
    options = enrolment_options(view, {}, now=case.clock.tick())
    device = SoftAuthenticator()
    complete_enrolment(view, {"passkey": [device.create(options)]}, now=case.clock.tick())
    assert [c.enrolled_via for c in credentials(SENIOR)] == [f"confirmed-by:{LEAD}"]
    # the link works once
    assert refusal_of(lambda: resolve_enrolment(token, now=case.clock.tick())).reason == "replayed"


def test_a_new_invitation_withdraws_the_last_and_revoking_ends_passkeys(store: Store) -> None:
    case, request_id, _ = waiting_screening(Clock())
    first = invite(LEAD, case_ref=case.ref, now=case.clock.tick(), operator=LENA)
    enrol(case, LEAD, SoftAuthenticator())
    assert (
        refusal_of(
            lambda: resolve_enrolment(enrol_token(first.enrolment_id), now=case.clock.tick())
        ).reason
        == "expired"
    )
    [lena] = [h for h in holders(now=case.clock.tick()) if h.key == LEAD]
    assert lena.passkeys == 1 and lena.invitation_until is None

    assert revoke(LEAD, now=case.clock.tick(), operator=SOFIA) == 1
    [event] = audit("system", "passkey.revoked")
    assert event.actor == f"stakeholder:{SENIOR}" and len(event.details["passkeys"]) == 1
    view, _ = lead_link(case, request_id)
    assert (
        refusal_of(lambda: prove_decider(view, {"passkey": ["{}"]}, now=case.clock.tick())).reason
        == "no-passkey"
    )


# --- what an authenticator answers for a decision ------------------------------------------------


def _decision_ready(store: Store) -> tuple[SampleCase, Any, LinkView, SoftAuthenticator]:
    case, request_id, _ = waiting_screening(Clock())
    device = SoftAuthenticator()
    enrol(case, LEAD, device)
    view, _ = lead_link(case, request_id)
    return case, request_id, view, device


def test_an_answer_to_a_challenge_never_handed_out_is_refused(store: Store) -> None:
    case, _, view, device = _decision_ready(store)
    options = challenge_for(view, case.clock.tick())
    forged = device.get(options, challenge=b64(os.urandom(32)))
    error = refusal_of(lambda: prove_decider(view, {"passkey": [forged]}, now=case.clock.tick()))
    assert error.status == 403 and error.reason == "passkey-challenge"
    assert refusals(case.ref)[-1].details["reason"] == "passkey-challenge"
    assert link_row(view.link_id).used_at is None


def test_a_replayed_answer_is_refused(store: Store) -> None:
    case, _, view, device = _decision_ready(store)
    answer = device.get(challenge_for(view, case.clock.tick()))
    assert prove_decider(view, {"passkey": [answer]}, now=case.clock.tick()) == CHANNEL_PASSKEY
    before = store.row_counts()
    error = refusal_of(lambda: prove_decider(view, {"passkey": [answer]}, now=case.clock.tick()))
    assert error.reason == "passkey-challenge"
    assert changed(before, store.row_counts()) == {"audit_event": 1}


def test_an_expired_challenge_or_one_for_another_link_is_refused(store: Store) -> None:
    case, request_id, view, device = _decision_ready(store)
    late = device.get(challenge_for(view, case.clock.tick()))
    case.clock.tick(minutes=6)
    assert (
        refusal_of(lambda: prove_decider(view, {"passkey": [late]}, now=case.clock.now)).reason
        == "passkey-challenge"
    )

    from tasks.store.links import create_link

    with unit_of_work() as session:  # a second link of the lead's to the same request
        other = create_link(
            session,
            purpose=view.purpose,
            case_id=case.case().id,
            stakeholder_id=stakeholder_id(LEAD),
            request_id=request_id,
            now=case.clock.tick(),
            expires_at=case.clock.now + timedelta(hours=1),
        )
    other_view = resolve_link(token_of(other), now=case.clock.tick())
    elsewhere = device.get(challenge_for(other_view, case.clock.tick()))
    assert (
        refusal_of(
            lambda: prove_decider(view, {"passkey": [elsewhere]}, now=case.clock.tick())
        ).reason
        == "passkey-challenge"
    )


def test_another_stakeholder_s_passkey_is_refused(store: Store) -> None:
    case, _, view, _ = _decision_ready(store)
    sofias = SoftAuthenticator()
    enrol(case, SENIOR, sofias)
    # sofia, holding lena's forwarded link, answers its challenge with her own passkey
    answer = sofias.get(challenge_for(view, case.clock.tick()))
    error = refusal_of(lambda: prove_decider(view, {"passkey": [answer]}, now=case.clock.tick()))
    assert error.reason == "passkey-someone-else"
    assert [c.sign_count for c in credentials(SENIOR)] == [0]


def test_an_unknown_passkey_is_refused(store: Store) -> None:
    case, _, view, _ = _decision_ready(store)
    stranger = SoftAuthenticator()  # never registered
    answer = stranger.get(challenge_for(view, case.clock.tick()))
    assert (
        refusal_of(lambda: prove_decider(view, {"passkey": [answer]}, now=case.clock.tick())).reason
        == "passkey-unknown"
    )


def test_an_answer_for_another_site_or_with_a_bad_signature_is_refused(store: Store) -> None:
    case, _, view, device = _decision_ready(store)
    phished = device.get(challenge_for(view, case.clock.tick()), origin="https://evil.example")
    assert (
        refusal_of(
            lambda: prove_decider(view, {"passkey": [phished]}, now=case.clock.tick())
        ).reason
        == "passkey-invalid"
    )
    impostor = SoftAuthenticator()
    impostor.credential_id = device.credential_id  # lena's credential id, another key
    forged = impostor.get(challenge_for(view, case.clock.tick()))
    assert (
        refusal_of(lambda: prove_decider(view, {"passkey": [forged]}, now=case.clock.tick())).reason
        == "passkey-invalid"
    )
    for junk in ("", "not json", json.dumps({"id": "x"}), "x" * 20_000):
        error = refusal_of(
            lambda junk=junk: prove_decider(view, {"passkey": [junk]}, now=case.clock.tick())
        )
        assert error.reason in ("passkey-missing", "passkey-malformed")
    assert link_row(view.link_id).used_at is None


# --- the case lead hears of a decision that waits for a passkey ----------------------------------


def test_the_case_lead_is_told_once_per_decision_and_person(store: Store) -> None:
    from models.tables import DecisionRequest, RemediationCase, Stakeholder

    # issuing the request told the case lead already: she is its approver and has no passkey
    case, request_id, _ = waiting_screening(Clock())
    [first] = outbox(NotificationEvent.PASSKEY_MISSING)
    assert first.context["approver"] == LEAD and first.recipient_id == stakeholder_id(LEAD)

    def tell(request_id: object) -> list[str]:
        with unit_of_work() as session:
            request = session.get(DecisionRequest, request_id)
            stored_case = session.get(RemediationCase, case.case().id)
            people = list(
                session.exec(
                    select(Stakeholder)
                    .where(Stakeholder.key.in_([LEAD, SENIOR]))
                    .order_by(Stakeholder.key)
                ).all()
            )
            assert request is not None and stored_case is not None
            return tell_case_lead_without_passkey(
                session, stored_case, request, people, case.clock.tick()
            )

    assert tell(request_id) == [SENIOR]
    assert tell(request_id) == []  # the same decision and people: nothing new
    # a refused submission's next round is the same decision: nobody is told again
    _, values = script(DecisionKind.SCREENING)
    assert not case.submit(request_id, LEAD, {**values, "outcome": "rejected"}).accepted
    newer = case.prepare(DecisionKind.SCREENING).request_id
    assert newer != request_id and tell(newer) == []
    missing = outbox(NotificationEvent.PASSKEY_MISSING)
    assert {n.context["approver"] for n in missing} == {LEAD, SENIOR}
    assert {n.recipient_id for n in missing} == {stakeholder_id(LEAD)}  # the case lead
    assert len(audit(case.ref, "passkey.missing")) == 2


# --- the page over HTTP --------------------------------------------------------------------------


@pytest.fixture
def client(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("PREFECT_API_URL", NOWHERE)
    with (
        temporary_settings({PREFECT_API_URL: NOWHERE}),
        TestClient(create_app(check_seconds=0), raise_server_exceptions=False) as test_client,
    ):
        yield test_client


def screening_now() -> tuple[SampleCase, Any, ApprovalLink]:
    return waiting_screening(Clock(utcnow()))


def test_the_page_takes_no_decision_from_someone_without_a_passkey(
    client: TestClient, store: Store
) -> None:
    case, _, link = screening_now()
    before = store.row_counts()

    shown = client.get(f"/a/{token_of(link)}")

    assert shown.status_code == 403 and "This decision needs your passkey" in shown.text
    assert "case lead has been told" in shown.text
    assert LEAD not in shown.text and 'name="csrf"' not in shown.text and "<form" not in shown.text
    assert store.row_counts() == before

    form = {"outcome": "accepted", "stakeholder_key": LEAD, "csrf": csrf_token(link.id)}
    sent = client.post(f"/a/{token_of(link)}", data=form)
    assert sent.status_code == 403 and "This decision needs your passkey" in sent.text
    assert changed(before, store.row_counts()) == {"audit_event": 1}
    assert refusals(case.ref)[-1].details == {"reason": "no-passkey", "purpose": "decide"}
    assert link_row(link.id).used_at is None


def test_the_page_asks_for_the_passkey_and_takes_the_decision_with_it(
    client: TestClient, store: Store
) -> None:
    case, request_id, link = screening_now()
    device = SoftAuthenticator()
    enrol(case, LEAD, device)
    path = f"/a/{token_of(link)}"

    shown = client.get(path)
    assert shown.status_code == 200 and 'data-passkey="get"' in shown.text
    assert '<script src="../static/passkey.js" defer></script>' in shown.text
    assert LEAD not in shown.text  # neither as a hint nor in the description
    assert "Decided by the case's case lead. Due" in shown.text
    csp = shown.headers["content-security-policy"]
    assert (
        "script-src 'self'" in csp
        and "connect-src 'self'" in csp
        and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    )
    script = client.get("/static/passkey.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert script.headers["x-content-type-options"] == "nosniff"

    csrf = csrf_token(link.id)
    assert client.post(f"{path}/options", data={"csrf": "0" * 64}).status_code == 403
    options = client.post(f"{path}/options", data={"csrf": csrf})
    assert options.status_code == 200 and options.headers["content-type"] == "application/json"
    form = {"outcome": "accepted", "stakeholder_key": LEAD, "csrf": csrf}

    # without the passkey's answer, nothing is used up
    missing = client.post(path, data=form)
    assert missing.status_code == 403 and "Your passkey was not accepted" in missing.text
    assert link_row(link.id).used_at is None

    # with it, the decision goes on to Prefect (which is not there: the link is given back)
    answer = device.get(client.post(f"{path}/options", data={"csrf": csrf}).text)
    sent = client.post(path, data={**form, "passkey": answer})
    assert sent.status_code == 503 and "The decision could not be submitted" in sent.text
    assert [e.subject_id for e in audit(case.ref, "passkey.verified")] == [str(link.id)]
    assert link_row(link.id).used_at is None
    assert request_row(request_id).status.value == "waiting"


def test_an_enrolment_link_on_the_page(client: TestClient, store: Store) -> None:
    case, _, _ = screening_now()
    sent = invite(LEAD, case_ref=case.ref, now=utcnow(), operator=LENA)
    path = f"/a/{enrol_token(sent.enrolment_id)}"
    [row] = rows(PasskeyEnrolment)
    assert row.link_id is not None
    csrf = csrf_token(row.link_id)

    shown = client.get(path)
    assert shown.status_code == 200 and "Add a passkey" in shown.text
    assert 'name="code"' in shown.text and 'data-passkey="create"' in shown.text
    assert LEAD not in shown.text

    wrong = client.post(f"{path}/options", data={"csrf": csrf, "code": "WRONGCODE"})
    assert wrong.status_code == 403 and wrong.json()["reason"] == "wrong-code"
    options = client.post(
        f"{path}/options", data={"csrf": csrf, "code": sent_code(sent.enrolment_id)}
    )
    assert options.status_code == 200
    assert options.json()["user"]["name"] == LEAD and options.json()["rp"]["id"] == "localhost"
    device = SoftAuthenticator()
    done = client.post(path, data={"csrf": csrf, "passkey": device.create(options.text)})
    assert done.status_code == 200 and "Passkey added" in done.text
    assert [c.credential_id for c in credentials(LEAD)] == [b64(device.credential_id)]
    again = client.get(path)
    assert again.status_code == 410 and "This invitation was used already" in again.text


def test_the_passkey_commands(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.integration.test_cli_actor import map_me
    from tests.integration.test_intake import run_cli

    case, _, _ = waiting_screening(Clock(utcnow()))
    map_me(tmp_path)  # this account is lena.lead
    capsys.readouterr()

    assert run_cli("passkey", "invite", LEAD, "--case", case.ref) == 0
    assert "the link goes by e-mail, its one-time code by chat" in capsys.readouterr().out
    assert run_cli("passkey", "invite", SENIOR) == 0
    said = capsys.readouterr().out
    assert "no second channel" in said and f"remedy passkey confirm {SENIOR}" in said
    assert run_cli("passkey", "confirm", LEAD) == 1  # not her own
    assert "their own" in capsys.readouterr().err
    assert run_cli("passkey", "confirm", SENIOR) == 0
    assert run_cli("passkey", "list") == 0
    listed = capsys.readouterr().out
    assert SENIOR in listed and "confirmed" in listed  # its invitation, by lena.lead
    assert run_cli("passkey", "revoke", SENIOR) == 0
    assert run_cli("passkey", "invite", "nobody.here") == 1
    assert [
        e.action
        for e in rows(AuditEvent, AuditEvent.chain == "system")
        if e.action.startswith("passkey.")
    ] == [
        "passkey.invited",
        "passkey.invited",
        "passkey.enrolment_confirmed",
        "passkey.revoked",
    ]


def test_decision_options_need_the_page_s_token(store: Store) -> None:
    case, _, view, _ = _decision_ready(store)
    error = refusal_of(
        lambda: decision_options(
            view, {"csrf": ["0" * 64]}, origin=None, fetch_site=None, now=case.clock.tick()
        )
    )
    assert error.reason == "csrf"
    good = decision_options(
        view,
        {"csrf": [csrf_token(view.link_id)]},
        origin=None,
        fetch_site=None,
        now=case.clock.tick(),
    )
    assert json.loads(good)["allowCredentials"]


@pytest.mark.parametrize(
    ("policy_line", "gate"),
    [
        ('passkey_required_for = "all"', "no-passkey"),
        ('passkey_required_for = ["closure", "closure_confirmation"]', "link"),
        ('without_passkey = "link_decides"', "link"),
    ],
)
def test_the_policy_says_which_decisions_need_a_passkey(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy_line: str, gate: str
) -> None:
    from tasks.web.gate import decision_gate

    shipped = (ROOT / "models" / "policy.toml").read_text(encoding="utf-8")
    name = policy_line.partition(" =")[0]
    policy = re.sub(rf"^{name} = .*$", policy_line, shipped, count=1, flags=re.MULTILINE)
    assert policy_line in policy
    (tmp_path / "policy.toml").write_text(policy, encoding="utf-8")
    monkeypatch.setenv("REMEDY_POLICY_FILE", str(tmp_path / "policy.toml"))
    _clear_caches()
    case, request_id, _ = waiting_screening(Clock())
    view, _ = lead_link(case, request_id)

    assert decision_gate(view) == gate
    if gate == "link":
        assert prove_decider(view, {}, now=case.clock.tick()) == "approval-page"
