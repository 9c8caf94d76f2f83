"""Test data for the decision and step tests: the sample directory and case, a clock, decisions.

Everything goes through the plain functions the step flows call (no Prefect server): a
`SampleCase` prepares a decision, reads the approver's one-time code from the outbox as a person
reads it in their message, and submits the form the way a resumed step hands it over.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import yaml
from sqlmodel import SQLModel, col, func, select

from demo.scripted import SAMPLE_SCRIPT
from models.enums import (
    CaseState,
    DecisionKind,
    MilestoneStatus,
    PlanStatus,
    Role,
    Step,
)
from models.intake import DirectoryIn, Location
from models.tables import (
    AuditEvent,
    CaseMember,
    PlanAction,
    RemediationCase,
    Stakeholder,
)
from tasks.case_state import StepContext, begin_case, current_plan, open_step
from tasks.decisions.requests import DecisionView, Pending, prepare_decision
from tasks.decisions.resume import issued_code
from tasks.decisions.submissions import SubmissionResult
from tasks.decisions.submissions import record_submission as _record
from tasks.intake import open_case, read_report
from tasks.steps.implement import activate_plan, update_milestone
from tasks.steps.plan import draft_plan
from tasks.store.audit import ChainReport, verify_chain
from tasks.store.cases import get_case
from tasks.store.db import read_only, unit_of_work
from tasks.store.directory import load_directory
from tests.conftest import ROOT, Store

EXAMPLES = ROOT / "examples"
SAMPLE_REPORT = EXAMPLES / "reports" / "tin-kivu.yaml"
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
LEAD, SENIOR, VERIFIER = "lena.lead", "sofia.senior", "amani.verifier"
ADVOCATE, BUDGET, SUPPLIER, OBSERVER = (
    "grace.advocate",
    "marc.budget",
    "kivu.contact",
    "rita.observer",
)


@dataclass
class Clock:
    """A controllable, timezone-aware UTC clock: every tick moves it on."""

    now: datetime = T0

    def tick(self, **delta: float) -> datetime:
        self.now += timedelta(**delta) if delta else timedelta(minutes=1)
        return self.now


def script(kind: DecisionKind, **changes: Any) -> tuple[str, dict[str, Any]]:
    """Return the sample script's approver and form values for a decision (a fresh copy)."""
    who, values = SAMPLE_SCRIPT[kind]
    return who, {**values, **changes}


def load_sample_directory(now: datetime) -> None:
    data = yaml.safe_load((EXAMPLES / "stakeholders.yaml").read_text())
    load_directory(DirectoryIn.model_validate(data), now=now, actor="test")


@dataclass
class SampleCase:
    """The sample case and the run carrying its current step."""

    ref: str
    clock: Clock
    ctx: StepContext
    run_id: uuid.UUID = field(default_factory=uuid.uuid4)

    # --- steps

    def enter(self, step: Step, run_id: uuid.UUID | None = None) -> StepContext:
        """Open a step the way its flow does (in a fresh run unless one is given)."""
        self.run_id = run_id or uuid.uuid4()
        self.ctx = open_step(self.ref, step, flow_run_id=self.run_id, now=self.clock.tick())
        assert self.ctx.active, self.ctx.note
        return self.ctx

    # --- decisions

    def prepare(
        self,
        kind: DecisionKind,
        *,
        scope: str | None = None,
        exclude: list[uuid.UUID] | None = None,
    ) -> Pending:
        return prepare_decision(
            self.ref,
            kind,
            scope=scope or self.ctx.scope,
            flow_run_id=self.run_id,
            now=self.clock.tick(),
            exclude_approvers=exclude,
        )

    def submit(
        self,
        request_id: uuid.UUID,
        who: str,
        values: dict[str, Any],
        *,
        code: str | None = None,
        now: datetime | None = None,
    ) -> SubmissionResult:
        """Submit a form as `who`, with the code they received unless another is given."""
        if code is None:
            received = issued_code(request_id, who)
            assert received is not None, f"{who} received no code for {request_id}"
            code = received
        form = {**values, "approver": who, "approval_code": code}
        return _record(request_id, form, now=now or self.clock.tick())

    def decide(
        self,
        kind: DecisionKind,
        *,
        who: str | None = None,
        scope: str | None = None,
        exclude: list[uuid.UUID] | None = None,
        **changes: Any,
    ) -> DecisionView:
        """Take a decision with the sample script's values (changed as given); it must pass."""
        scripted_who, values = script(kind, **changes)
        pending = self.prepare(kind, scope=scope, exclude=exclude)
        assert pending.decision is None, f"{kind.value} was decided already"
        result = self.submit(pending.request_id, who or scripted_who, values)
        assert result.accepted and result.decision is not None, result.reason
        return result.decision

    def confirmation_scope(self, proposal: DecisionView) -> str:
        """The scope close-incident gives the confirmation of one proposal."""
        return f"{self.ctx.scope}-proposal-{proposal.id.hex[:12]}"

    # --- reading the store

    def case(self) -> RemediationCase:
        with read_only() as session:
            return get_case(session, self.ref)

    def audit(self) -> list[AuditEvent]:
        with read_only() as session:
            return list(
                session.exec(
                    select(AuditEvent)
                    .where(AuditEvent.chain == self.ref)
                    .order_by(col(AuditEvent.seq))
                ).all()
            )

    def actions(self) -> list[str]:
        return [e.action for e in self.audit()]

    def chain(self) -> ChainReport:
        with read_only() as session:
            return verify_chain(session, self.ref)


def start_sample_case(
    clock: Clock,
    *,
    variant: str = "",
    directory: bool = True,
    site: str | None = None,
    owed: bool = True,
) -> SampleCase:
    """Load the directory, open the sample case (a variant is another report), start step 1.

    A site replaces the report's `location.site` (checked as intake checks it); `owed=False`
    leaves out the amounts the report says the workers are owed (an empty remedy ledger).
    """
    if directory:
        load_sample_directory(clock.now)
    report = read_report(SAMPLE_REPORT, now=clock.now)
    if not owed:
        report = report.model_copy(update={"owed": []})
    if variant:
        report = report.model_copy(update={"description": f"{report.description} {variant}"})
    if site is not None:
        location = Location(country=report.location.country, site=site)
        report = report.model_copy(update={"location": location})
    ref = open_case(report, now=clock.tick(), actor="test").reference
    begin_case(ref, now=clock.tick())
    run_id = uuid.uuid4()
    ctx = open_step(ref, Step.VERIFY, flow_run_id=run_id, now=clock.tick())
    return SampleCase(ref=ref, clock=clock, ctx=ctx, run_id=run_id)


# --- driving the sample case to a state ----------------------------------------------------------


def verify(case: SampleCase) -> None:
    for kind in (DecisionKind.SCREENING, DecisionKind.SAFETY, DecisionKind.VERIFICATION):
        case.decide(kind)


def respond(case: SampleCase) -> None:
    case.enter(Step.RESPOND)
    case.decide(DecisionKind.IMPACT_ASSESSMENT)
    case.decide(DecisionKind.RESPONSE)


def plan(case: SampleCase) -> None:
    case.enter(Step.PLAN)
    draft_plan(case.ref, now=case.clock.tick())
    case.decide(DecisionKind.PLAN_AGREEMENT)
    case.decide(DecisionKind.PLAN_BUDGET)


def implement(case: SampleCase) -> None:
    case.enter(Step.IMPLEMENT)
    activate_plan(case.ref, now=case.clock.tick())
    from demo.scripted import REPRESENTATIVE, settle

    for key, owner in milestones(case.ref):
        update_milestone(
            case.ref,
            key,
            status=MilestoneStatus.DONE,
            by=owner or LEAD,
            evidence=[f"doc:{key}"],
            now=case.clock.tick(),
        )
        settle(case.ref, key, payer=LEAD, representative=REPRESENTATIVE, now=case.clock.tick())
        update_milestone(
            case.ref, key, status=MilestoneStatus.VERIFIED, by=LEAD, now=case.clock.tick()
        )


def to_closing(clock: Clock, *, variant: str = "", directory: bool = True) -> SampleCase:
    """A case screened out with a reason: it waits in CLOSING for a closure proposal."""
    case = start_sample_case(clock, variant=variant, directory=directory)
    case.decide(DecisionKind.SCREENING, outcome="rejected", reason="Outside our supply chain.")
    assert case.case().state == CaseState.CLOSING
    case.enter(Step.CLOSE)
    return case


def to_implementing(clock: Clock) -> SampleCase:
    case = start_sample_case(clock)
    verify(case)
    respond(case)
    plan(case)
    case.enter(Step.IMPLEMENT)
    return case


# --- reading rows --------------------------------------------------------------------------------


def milestones(case_ref: str) -> list[tuple[str, str | None]]:
    """The approved plan's milestones (key, owner key), in due order."""
    with read_only() as session:
        case = get_case(session, case_ref)
        approved = current_plan(session, case.id, PlanStatus.APPROVED)
        assert approved is not None
        rows = session.exec(
            select(PlanAction.key, Stakeholder.key)
            .join(Stakeholder, col(Stakeholder.id) == col(PlanAction.owner_id), isouter=True)
            .where(PlanAction.plan_id == approved.id)
            .order_by(col(PlanAction.due_on), col(PlanAction.key))
        ).all()
        return [(k, o) for k, o in rows]


def rows(model: type[SQLModel], *where: Any) -> list[Any]:
    """Return the rows that match; in the order they were written where the key is a counter."""
    query = select(model).where(*where)
    [*key] = sa.inspect(model).primary_key
    if len(key) == 1 and isinstance(key[0].type, sa.Integer):
        query = query.order_by(key[0])
    with read_only() as session:
        return list(session.exec(query).all())


def count(model: type[SQLModel], *where: Any) -> int:
    with read_only() as session:
        return int(session.exec(select(func.count()).select_from(model).where(*where)).one())


def stakeholder_id(key: str) -> uuid.UUID:
    with read_only() as session:
        person = session.exec(select(Stakeholder).where(Stakeholder.key == key)).one()
        return person.id


def remove_role(case_ref: str, role: Role, key: str | None = None) -> None:
    """Take a role away on a case directly in the store (everyone holding it, or one person)."""
    with unit_of_work() as session:
        case = get_case(session, case_ref)
        query = select(CaseMember).where(CaseMember.case_id == case.id, CaseMember.role == role)
        if key is not None:
            query = query.where(CaseMember.stakeholder_id == stakeholder_id(key))
        for member in session.exec(query).all():
            session.delete(member)


def dump_store(store: Store) -> str:
    """Every row of every table, as text."""
    chunks = []
    with store.engine().connect() as conn:
        for table in SQLModel.metadata.tables.values():
            for row in conn.execute(sa.select(table)):
                chunks.append(" ".join(str(v) for v in row))
        conn.rollback()
    return "\n".join(chunks)
