import re
from starlette.testclient import TestClient
from sqlmodel import select
from models.enums import DecisionKind
from models.tables import ApprovalLink, Stakeholder
from tasks.db import read_only
from tasks.links import link_token
from tests.integration.factories import Clock, start_sample_case
from tests.conftest import Store


def test_scratch(store: Store, monkeypatch) -> None:
    monkeypatch.setenv("REMEDY_APPROVAL_BASE_URL", "http://testserver")
    from tests.conftest import _clear_caches
    _clear_caches()
    from datetime import datetime, UTC
    case = start_sample_case(Clock(datetime.now(UTC)))
    pending = case.prepare(DecisionKind.SCREENING)
    with read_only() as s:
        lena = s.exec(select(Stakeholder).where(Stakeholder.key == "lena.lead")).one()
        link = s.exec(select(ApprovalLink).where(ApprovalLink.request_id == pending.request_id, ApprovalLink.stakeholder_id == lena.id)).one()
    from flows.approval_page import create_app
    client = TestClient(create_app(check_seconds=0.5))
    url = f"/a/{link_token(link.id, link.expires_at)}"
    r = client.get(url)
    print(r.status_code, dict(r.headers))
    open("/tmp/page.html", "w").write(r.text)
    csrf = re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)
    r = client.post(url, data={"csrf": csrf, "stakeholder_key": "lena.lead", "outcome": "bogus", "reason": "<b>x</b>"})
    print(r.status_code)
    open("/tmp/page422.html", "w").write(r.text)
    r = client.post(url, data={"csrf": "x", "stakeholder_key": "lena.lead"})
    print(r.status_code, r.text[-600:])
    r = client.post(url, data={"csrf": csrf, "stakeholder_key": "someone"})
    print(r.status_code)
    r = client.get(url[:-3] + "abc")
    print(r.status_code)
    r = client.post(url, data={"csrf": csrf, "stakeholder_key": "lena.lead", "outcome": "accepted"})
    print(r.status_code, r.text[-800:])
    for e in case.audit()[-6:]:
        print(e.action, e.details)
    r = client.get("/nothing")
    print(r.status_code, r.headers.get("content-security-policy"))
