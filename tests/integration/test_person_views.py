"""Each affected person's view of the remedy, for the closure's signers (issue 12, item 5).

A person's view is recorded by them (through the case's victim representative or case lead) or by
their representative; the text is sealed with the vault like an identity, a new view replaces the
previous one (the history stays on file), and both signers of the closure see each person's latest
view as plain text on the approval page only: the Prefect form's description, the audit trail and
the messages carry who recorded it and when, never the words.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from models.enums import DecisionKind
from models.tables import AuditEvent, Notification
from tasks.store.person_views import (
    VIEW_MAX_CHARS,
    PersonViewError,
    record_person_view,
)
from tests.conftest import Store
from tests.integration.factories import (
    ADVOCATE,
    LEAD,
    OBSERVER,
    SENIOR,
    Clock,
    SampleCase,
    dump_store,
    rows,
    to_closing,
)
from tests.integration.test_cli_actor import map_me
from tests.integration.test_intake import run_cli
from tests.integration.test_step5_close import as_html, closure_page

FIRST_VIEW = "P-01 first said the wages were not all paid back."
P01_VIEW = (
    "P-01 <b>accepts</b> the wages paid; wants [school](https://evil.example) for her brother"
)
P03_VIEW = "P-03: documents returned, but still afraid to go back to the site."


def views_table(store: Store) -> list[dict[str, object]]:
    """The person_remedy_view rows as the database holds them (no decryption)."""
    with store.engine().connect() as conn:
        table = sa.Table("person_remedy_view", sa.MetaData(), autoload_with=conn)
        found = [dict(row._mapping) for row in conn.execute(sa.select(table))]
        conn.rollback()
    return found


def record_views(case: SampleCase) -> None:
    """P-01: a first view, then a newer one from their representative; P-03: their own words."""
    record_person_view(
        case.ref, "P-01", FIRST_VIEW, by=ADVOCATE, given_by="person", now=case.clock.tick()
    )
    record_person_view(
        case.ref,
        "P-01",
        P01_VIEW,
        by=ADVOCATE,
        given_by="representative",
        now=case.clock.tick(days=1),
    )
    record_person_view(
        case.ref, "P-03", P03_VIEW, by=LEAD, given_by="person", now=case.clock.tick()
    )


def test_both_signers_see_each_persons_latest_view_on_the_approval_page_only(
    store: Store,
) -> None:
    case = to_closing(Clock())
    record_views(case)
    pending = case.prepare(DecisionKind.CLOSURE)

    # the Prefect form's description: who recorded each view and when, never the words
    brief = pending.description
    assert "### Each person's view of the remedy" in brief
    assert "P-01: recorded by grace.advocate on 2026-11-27, given by their representative" in brief
    assert "P-03: recorded by lena.lead on 2026-11-27, given by the person" in brief
    assert "P-02: no view recorded" in brief
    for words in ("the wages paid", "afraid", "first said"):
        assert words not in brief

    # the first signer's approval page: the latest view of each, as plain text
    page = closure_page(case, pending.request_id, LEAD)
    html = as_html(page)
    assert "P-01 &lt;b&gt;accepts&lt;/b&gt; the wages paid" in html and "<b>" not in html
    assert 'href="https://evil.example' not in html
    assert P03_VIEW in html
    assert FIRST_VIEW not in page  # replaced by the newer view
    assert "P-02: no view recorded" in page

    # the second signer sees the same
    proposal = case.decide(DecisionKind.CLOSURE, closure_type="no_basis")
    confirm = case.prepare(
        DecisionKind.CLOSURE_CONFIRMATION,
        scope=case.confirmation_scope(proposal),
        exclude=[proposal.approver_id],
    )
    page = closure_page(case, confirm.request_id, SENIOR)
    assert "P-01 &lt;b&gt;accepts&lt;/b&gt; the wages paid" in as_html(page)
    assert P03_VIEW in page and FIRST_VIEW not in page
    assert "P-02: no view recorded" in page
    assert "afraid" not in confirm.description
    # the shared view of the closure form stays as it was
    assert "P-01 and P-03 accept the outcome" in page


def test_views_are_sealed_kept_as_history_and_never_leave_the_store_in_clear(
    store: Store,
) -> None:
    case = to_closing(Clock())
    record_views(case)
    stored = views_table(store)
    assert len(stored) == 3  # the replaced view stays on file
    assert {r["given_by"] for r in stored} == {"person", "representative"}
    for row in stored:
        assert "accepts" not in str(row["text_ciphertext"])
        assert "afraid" not in str(row["text_ciphertext"])
    everything = dump_store(store)
    for text in (FIRST_VIEW, P01_VIEW, P03_VIEW, "the wages paid", "first said", "afraid"):
        assert text not in everything

    recorded = rows(AuditEvent, AuditEvent.action == "person.view_recorded")
    assert len(recorded) == 3
    assert {e.details["person"] for e in recorded} == {"P-01", "P-03"}
    for event in recorded:
        assert set(event.details) <= {"person", "given_by", "replaced", "os_user", "operator"}
    for note in rows(Notification):
        assert "the wages paid" not in str(note.context) and "afraid" not in str(note.context)


@pytest.mark.parametrize("who", [SENIOR, OBSERVER, "nobody.here"])
def test_only_the_victim_representative_or_case_lead_records_a_view(store: Store, who: str) -> None:
    case = to_closing(Clock())
    with pytest.raises(PersonViewError) as refused:
        record_person_view(
            case.ref, "P-01", P01_VIEW, by=who, given_by="person", now=case.clock.tick()
        )
    assert "the wages paid" not in str(refused.value)
    assert views_table(store) == []
    assert rows(AuditEvent, AuditEvent.action == "person.view_recorded") == []


@pytest.mark.parametrize(
    ("pseudonym", "text", "given_by", "why"),
    [
        ("P-99", P01_VIEW, "person", "no affected person P-99"),
        ("P-01", "   ", "person", "empty"),
        ("P-01", "x" * (VIEW_MAX_CHARS + 1), "person", f"{VIEW_MAX_CHARS}"),
        ("P-01", P01_VIEW, "guardian", "person or representative"),
    ],
)
def test_an_unknown_person_an_empty_or_long_text_or_an_unknown_giver_is_refused(
    store: Store, pseudonym: str, text: str, given_by: str, why: str
) -> None:
    case = to_closing(Clock())
    with pytest.raises(PersonViewError, match=why):
        record_person_view(
            case.ref, pseudonym, text, by=ADVOCATE, given_by=given_by, now=case.clock.tick()
        )
    assert views_table(store) == []


def test_the_command_line_records_a_view_as_the_person_at_the_terminal(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = to_closing(Clock())
    map_me(tmp_path, ADVOCATE)
    assert run_cli("person", "view", case.ref, "P-01", "--text", P01_VIEW) == 0
    words = tmp_path / "p03.txt"
    words.write_text(P03_VIEW, encoding="utf-8")
    assert (
        run_cli("person", "view", case.ref, "P-03", "--file", str(words), "--given-by", "person")
        == 0
    )
    said = capsys.readouterr()
    assert "P-01" in said.out and "the wages paid" not in said.out + said.err

    assert run_cli("person", "view", case.ref, "P-02") == 2  # neither --text nor --file
    assert run_cli("person", "view", case.ref, "P-99", "--text", "x") == 1
    assert run_cli("person", "view", case.ref, "P-02", "--text", "x", "--by", LEAD) == 1

    stored = views_table(store)
    assert sorted(str(r["given_by"]) for r in stored) == ["person", "representative"]
    [first, *_] = rows(AuditEvent, AuditEvent.action == "person.view_recorded")
    assert first.actor == f"stakeholder:{ADVOCATE}" and first.details["os_user"]

    pending = case.prepare(DecisionKind.CLOSURE)
    page = closure_page(case, pending.request_id, LEAD)
    assert P03_VIEW in page and "the wages paid" in page
    assert "P-02: no view recorded" in page
