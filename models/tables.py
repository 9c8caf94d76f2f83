"""The case store: SQLModel tables (docs/architecture.md, The case store is the source of truth).

Schema changes go through Alembic migrations. Identifying data of affected persons and reporters
lives only in `*_ciphertext` columns (Fernet, see tasks.store.vault; docs/domain.md, Personal
data); every other column holds pseudonyms, references and enums.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.columns import enum_field as _enum
from models.columns import fk_field as _fk
from models.columns import id_field as _id
from models.columns import json_field as _json
from models.columns import when_field as _when
from models.enums import (
    ActionKind,
    AgeBand,
    CaseState,
    CaseStatus,
    ChatKind,
    ClosureType,
    ConsentMethod,
    ConsentPurpose,
    DecisionKind,
    DecisionRequestStatus,
    EmailFormat,
    IndicatorStatus,
    Involvement,
    LinkPurpose,
    Locale,
    MilestoneStatus,
    Mineral,
    NotificationChannel,
    NotificationStatus,
    OrganisationType,
    PlanStatus,
    RemedyRole,
    ReporterStatus,
    ResponseLevel,
    RiskLevel,
    Role,
    ScreeningOutcome,
    Severity,
    Sex,
    SourceType,
    StepRunStatus,
)
from models.enums import Channel as IntakeChannel


class Organisation(SQLModel, table=True):
    """A company, programme, site, provider or authority that takes part in cases."""

    __tablename__ = "organisation"
    id: uuid.UUID = _id()
    key: str = Field(max_length=64, unique=True)
    name: str = Field(max_length=200)
    type: OrganisationType = _enum(OrganisationType)
    country: str | None = Field(default=None, max_length=2)
    external_ids: dict[str, str] = _json(default_factory=dict)
    audit_status: str | None = Field(default=None, max_length=40)
    created_at: datetime = _when()


class Stakeholder(SQLModel, table=True):
    """A person who receives notifications and may hold roles on cases (staff, not victims)."""

    __tablename__ = "stakeholder"
    id: uuid.UUID = _id()
    key: str = Field(max_length=64, unique=True)
    display_name: str = Field(max_length=200)
    organisation_id: uuid.UUID | None = _fk("organisation.id", nullable=True)
    locale: Locale = _enum(Locale, default=Locale.EN)
    email: str | None = Field(default=None, max_length=320)
    chat_kind: ChatKind | None = _enum(ChatKind, nullable=True)
    chat_address: str | None = Field(default=None, max_length=200)
    # Where the chat webhook URL (a credential) is kept: "env:NAME" or "file:name".
    chat_secret_ref: str | None = Field(default=None, max_length=200)
    email_format: EmailFormat = _enum(EmailFormat, default=EmailFormat.HTML)
    default_roles: list[str] = _json()
    # operating-system accounts that are this person on the command line, and whom they may
    # name with --by ("*": anyone)
    os_users: list[str] = _json()
    acts_for: list[str] = _json()
    active: bool = True
    created_at: datetime = _when()

    def __repr__(self) -> str:
        return f"Stakeholder(key={self.key!r})"


class CaseSequence(SQLModel, table=True):
    """The last case number issued per year, for references like RC-2026-0007."""

    __tablename__ = "case_sequence"
    year: int = Field(primary_key=True)
    last: int = 0


class RemediationCase(SQLModel, table=True):
    """One remediation case: where it stands in the six steps and the deadlines that bind it."""

    __tablename__ = "remediation_case"
    __table_args__ = (sa.Index("ix_remediation_case_status_state", "status", "state"),)
    id: uuid.UUID = _id()
    reference: str = Field(max_length=20, unique=True)
    state: CaseState = _enum(CaseState, default=CaseState.INTAKE)
    step: int = Field(default=1, ge=1, le=6)
    status: CaseStatus = _enum(CaseStatus, default=CaseStatus.ACTIVE)
    held_from: CaseState | None = _enum(CaseState, nullable=True)
    state_changed_at: datetime = _when()
    severity: Severity | None = _enum(Severity, nullable=True)
    severity_is_final: bool = False
    involvement: Involvement | None = _enum(Involvement, nullable=True)
    response_level: ResponseLevel | None = _enum(ResponseLevel, nullable=True)
    remedy_role: RemedyRole | None = _enum(RemedyRole, nullable=True)
    closure_type: ClosureType | None = _enum(ClosureType, nullable=True)
    lead_organisation_id: uuid.UUID | None = _fk("organisation.id", nullable=True)
    opened_at: datetime = _when()
    closed_at: datetime | None = _when(nullable=True)
    acknowledge_by: datetime | None = _when(nullable=True)
    verify_by: datetime | None = _when(nullable=True)
    decide_by: datetime | None = _when(nullable=True)
    plan_by: datetime | None = _when(nullable=True)
    version: int = 1

    def __repr__(self) -> str:
        return f"RemediationCase(reference={self.reference!r}, state={self.state!s})"


class CaseMember(SQLModel, table=True):
    """Who plays which role on which case."""

    __tablename__ = "case_member"
    __table_args__ = (sa.UniqueConstraint("case_id", "stakeholder_id", "role"),)
    id: uuid.UUID = _id()
    case_id: uuid.UUID = _fk("remediation_case.id")
    stakeholder_id: uuid.UUID = _fk("stakeholder.id")
    role: Role = _enum(Role)
    added_at: datetime = _when()


class Allegation(SQLModel, table=True):
    """An incoming report; its narrative and the reporter's identity are encrypted."""

    __tablename__ = "allegation"
    id: uuid.UUID = _id()
    case_id: uuid.UUID = _fk("remediation_case.id")
    received_at: datetime = _when()
    occurred_on: date | None = None
    source_type: SourceType = _enum(SourceType)
    channel: IntakeChannel = _enum(IntakeChannel)
    anonymous: bool = False
    language: str = Field(max_length=35)
    country: str = Field(max_length=2, index=True)
    site: str | None = Field(default=None, max_length=200)
    mineral: Mineral = _enum(Mineral)
    persons_reported: int = 0
    reported_indicators: list[str] = _json()
    description_ciphertext: str = Field(sa_type=sa.Text)
    reporter_ciphertext: str | None = Field(default=None, sa_type=sa.Text)
    # Keyed hash (HMAC) of the report's content: finds duplicates without exposing the text.
    content_hash: str = Field(max_length=64, unique=True)
    screening_outcome: ScreeningOutcome = _enum(ScreeningOutcome, default=ScreeningOutcome.PENDING)
    screening_reason: str | None = Field(default=None, sa_type=sa.Text)  # sealed (case key)
    duplicate_of_case_id: uuid.UUID | None = _fk("remediation_case.id", nullable=True)

    def __repr__(self) -> str:
        return f"Allegation(id={self.id!s})"


class AllegationOrganisation(SQLModel, table=True):
    """An organisation the allegation names, and in which capacity."""

    __tablename__ = "allegation_organisation"
    __table_args__ = (sa.UniqueConstraint("allegation_id", "organisation_id", "relation"),)
    id: uuid.UUID = _id()
    allegation_id: uuid.UUID = _fk("allegation.id")
    organisation_id: uuid.UUID = _fk("organisation.id")
    relation: str = Field(max_length=40)
    tier: int | None = Field(default=None, ge=0, le=10)


class AffectedPerson(SQLModel, table=True):
    """A victim or affected worker, known by a pseudonym; identity only in the ciphertext."""

    __tablename__ = "affected_person"
    __table_args__ = (sa.UniqueConstraint("case_id", "pseudonym"),)
    id: uuid.UUID = _id()
    case_id: uuid.UUID = _fk("remediation_case.id")
    pseudonym: str = Field(max_length=20)
    age_band: AgeBand = _enum(AgeBand, default=AgeBand.UNKNOWN)
    is_minor: bool = False
    age_uncertain: bool = False
    sex: Sex = _enum(Sex, default=Sex.UNKNOWN)
    nationality: str | None = Field(default=None, max_length=2)
    languages: list[str] = _json()
    identity_ciphertext: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = _when()

    def __repr__(self) -> str:
        return f"AffectedPerson(pseudonym={self.pseudonym!r})"


class ConsentRecord(SQLModel, table=True):
    """Consent of an affected person (or guardian) for one purpose and set of recipients."""

    __tablename__ = "consent_record"
    id: uuid.UUID = _id()
    case_id: uuid.UUID = _fk("remediation_case.id")
    person_id: uuid.UUID = _fk("affected_person.id")
    purpose: ConsentPurpose = _enum(ConsentPurpose)
    recipients: list[str] = _json()
    method: ConsentMethod = _enum(ConsentMethod)
    language: str | None = Field(default=None, max_length=35)
    interpreter_used: bool = False
    given_at: datetime = _when()
    expires_at: datetime | None = _when(nullable=True)
    withdrawn_at: datetime | None = _when(nullable=True)
    recorded_by_id: uuid.UUID | None = _fk("stakeholder.id", nullable=True)


class PersonRemedyView(SQLModel, table=True):
    """An affected person's view of the remedy, for the closure's signers; the text is encrypted.

    A newer row replaces the person's earlier ones (which stay on file); `given_by` says whether
    the person gave it themself or their representative did ("person" or "representative").
    """

    __tablename__ = "person_remedy_view"
    id: uuid.UUID = _id()
    case_id: uuid.UUID = _fk("remediation_case.id")
    person_id: uuid.UUID = _fk("affected_person.id")
    given_by: str = Field(max_length=20)
    recorded_by_id: uuid.UUID = _fk("stakeholder.id")
    recorded_at: datetime = _when()
    text_ciphertext: str = Field(sa_type=sa.Text)

    def __repr__(self) -> str:
        return f"PersonRemedyView(id={self.id!s})"


class SafetyAssessment(SQLModel, table=True):
    """The risk assessment that must precede any contact or supplier notice."""

    __tablename__ = "safety_assessment"
    id: uuid.UUID = _id()
    case_id: uuid.UUID = _fk("remediation_case.id")
    assessor_id: uuid.UUID | None = _fk("stakeholder.id", nullable=True)
    assessed_at: datetime = _when()
    risk_level: RiskLevel = _enum(RiskLevel)
    risks: list[str] = _json()
    mitigation: str | None = Field(default=None, sa_type=sa.Text)  # sealed (case key)
    contact_cleared: bool = False
    valid_until: datetime | None = _when(nullable=True)


class VerificationFinding(SQLModel, table=True):
    """ILO forced-labour indicators and the Palermo act / means / purpose test for a case."""

    __tablename__ = "verification_finding"
    id: uuid.UUID = _id()
    case_id: uuid.UUID = _fk("remediation_case.id")
    assessed_by_id: uuid.UUID | None = _fk("stakeholder.id", nullable=True)
    assessed_at: datetime = _when()
    ilo_indicators: dict[str, str] = _json(default_factory=dict)
    palermo_act: IndicatorStatus = _enum(IndicatorStatus, default=IndicatorStatus.UNKNOWN)
    palermo_means: IndicatorStatus = _enum(IndicatorStatus, default=IndicatorStatus.UNKNOWN)
    palermo_purpose: IndicatorStatus = _enum(IndicatorStatus, default=IndicatorStatus.UNKNOWN)
    annex_ii: list[str] = _json()
    minors_involved: bool = False
    trafficking_indicated: bool = False
    forced_labour_indicated: bool = False


class DecisionRequest(SQLModel, table=True):
    """A decision a step waits for, mirrored from Prefect so CLI, page and sweep can find it."""

    __tablename__ = "decision_request"
    __table_args__ = (
        sa.UniqueConstraint("case_id", "kind", "round"),
        sa.Index("ix_decision_request_status_due_at", "status", "due_at"),
    )
    id: uuid.UUID = _id()
    case_id: uuid.UUID = _fk("remediation_case.id")
    kind: DecisionKind = _enum(DecisionKind)
    step: int = Field(ge=1, le=6)
    round: int = 1
    status: DecisionRequestStatus = _enum(
        DecisionRequestStatus, default=DecisionRequestStatus.WAITING
    )
    flow_run_id: uuid.UUID | None = None
    suspend_key: str = Field(max_length=120, unique=True)
    requested_at: datetime = _when()
    due_at: datetime | None = _when(nullable=True)
    decided_at: datetime | None = _when(nullable=True)
    # Decisions of one kind are looked up within a scope: the step's entry ("entry-2"), so that a
    # reopened case or a revised plan asks again instead of reusing an old answer.
    scope: str = Field(default="entry-1", max_length=80)
    approver_ids: list[str] = _json()
    required_approvals: int = 1
    last_reminded_at: datetime | None = _when(nullable=True)
    escalated_at: datetime | None = _when(nullable=True)
    # failed attempts resumed the run: each suspends again under a fresh key, same round
    tries: int = 0


class StepRun(SQLModel, table=True):
    """One entry of a case into a step and the Prefect flow run carrying it (for the reconciler)."""

    __tablename__ = "step_run"
    __table_args__ = (sa.UniqueConstraint("case_id", "step", "entry"),)
    id: uuid.UUID = _id()
    case_id: uuid.UUID = _fk("remediation_case.id")
    step: int = Field(ge=1, le=6)
    entry: int = 1
    status: StepRunStatus = _enum(StepRunStatus, default=StepRunStatus.PENDING)
    flow_run_id: uuid.UUID | None = None
    created_at: datetime = _when()
    started_at: datetime | None = _when(nullable=True)
    finished_at: datetime | None = _when(nullable=True)


class ApprovalCode(SQLModel, table=True):
    """A one-time approval code sent to one designated approver; only its hash is kept."""

    __tablename__ = "approval_code"
    __table_args__ = (sa.UniqueConstraint("request_id", "stakeholder_id"),)
    id: uuid.UUID = _id()
    request_id: uuid.UUID = _fk("decision_request.id")
    stakeholder_id: uuid.UUID = _fk("stakeholder.id")
    code_hash: str = Field(max_length=128)
    expires_at: datetime = _when()
    used_at: datetime | None = _when(nullable=True)


class Decision(SQLModel, table=True):
    """A decision taken by an authorised person (accepted ones only; refusals are audited)."""

    __tablename__ = "decision"
    __table_args__ = (sa.UniqueConstraint("request_id", "approver_id"),)
    id: uuid.UUID = _id()
    case_id: uuid.UUID = _fk("remediation_case.id")
    request_id: uuid.UUID | None = _fk("decision_request.id", nullable=True)
    kind: DecisionKind = _enum(DecisionKind)
    step: int = Field(ge=1, le=6)
    outcome: str = Field(max_length=40)
    payload: dict[str, Any] = _json(default_factory=dict)
    approver_id: uuid.UUID = _fk("stakeholder.id")
    decided_at: datetime = _when()
    reason: str | None = Field(default=None, sa_type=sa.Text)  # sealed (case key)


class ActionPlan(SQLModel, table=True):
    """A version of the remediation action plan; a revision is a new version."""

    __tablename__ = "action_plan"
    __table_args__ = (sa.UniqueConstraint("case_id", "version"),)
    id: uuid.UUID = _id()
    case_id: uuid.UUID = _fk("remediation_case.id")
    version: int = 1
    status: PlanStatus = _enum(PlanStatus, default=PlanStatus.DRAFT)
    objectives: str | None = Field(default=None, max_length=4000)
    victim_priorities: str | None = Field(default=None, sa_type=sa.Text)  # sealed (case key)
    created_at: datetime = _when()
    approved_at: datetime | None = _when(nullable=True)


class PlanAction(SQLModel, table=True):
    """An action / milestone of a plan: what, for whom, who owns it, by when, how it is verified."""

    __tablename__ = "plan_action"
    __table_args__ = (
        sa.UniqueConstraint("plan_id", "key"),
        sa.Index("ix_plan_action_status_due_on", "status", "due_on"),
    )
    id: uuid.UUID = _id()
    plan_id: uuid.UUID = _fk("action_plan.id")
    case_id: uuid.UUID = _fk("remediation_case.id")
    key: str = Field(max_length=60)
    kind: ActionKind = _enum(ActionKind)
    category: str = Field(max_length=40)
    title: str = Field(max_length=200)
    person_id: uuid.UUID | None = _fk("affected_person.id", nullable=True)
    owner_id: uuid.UUID | None = _fk("stakeholder.id", nullable=True)
    owner_organisation_id: uuid.UUID | None = _fk("organisation.id", nullable=True)
    due_on: date
    verification_method: str = Field(max_length=300)
    consequence_if_missed: str | None = Field(default=None, max_length=500)
    status: MilestoneStatus = _enum(MilestoneStatus, default=MilestoneStatus.PLANNED)
    status_changed_at: datetime = _when()
    waived_reason: str | None = Field(default=None, sa_type=sa.Text)  # sealed (case key)
    evidence_refs: list[str] = _json()
    # a due-date extension the owner asked for, waiting for the case lead
    extension_due_on: date | None = None
    extension_reason: str | None = Field(default=None, sa_type=sa.Text)  # sealed (case key)
    extension_requested_by_id: uuid.UUID | None = _fk("stakeholder.id", nullable=True, index=False)


class ProgressUpdate(SQLModel, table=True):
    """A progress report on a plan action, with references to its evidence."""

    __tablename__ = "progress_update"
    id: uuid.UUID = _id()
    action_id: uuid.UUID = _fk("plan_action.id")
    case_id: uuid.UUID = _fk("remediation_case.id")
    reported_by_id: uuid.UUID | None = _fk("stakeholder.id", nullable=True)
    reported_at: datetime = _when()
    status: MilestoneStatus = _enum(MilestoneStatus)
    note: str | None = Field(default=None, sa_type=sa.Text)  # sealed (case key)
    evidence_refs: list[str] = _json()
    idempotency_key: str | None = Field(default=None, max_length=120, unique=True)


class ClosureRecord(SQLModel, table=True):
    """How a case closed: type, the victim's view, unmet needs, who signed off."""

    __tablename__ = "closure_record"
    id: uuid.UUID = _id()
    case_id: uuid.UUID = Field(foreign_key="remediation_case.id", unique=True)
    closure_type: ClosureType = _enum(ClosureType)
    victim_view_recorded: bool = False
    victim_view: str | None = Field(default=None, sa_type=sa.Text)  # sealed (case key)
    unmet_needs: str | None = Field(default=None, sa_type=sa.Text)  # sealed (case key)
    approver_ids: list[str] = _json()
    closed_at: datetime = _when()
    follow_up_on: date | None = None


class Lesson(SQLModel, table=True):
    """The lessons-learned record of a closed case: coded root causes and the changes due."""

    __tablename__ = "lesson"
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    case_id: uuid.UUID = Field(foreign_key="remediation_case.id", unique=True)
    root_causes: list[str] = _json()
    changes: list[dict[str, Any]] = _json()
    summary: str | None = Field(default=None, sa_type=sa.Text)  # sealed (case key)
    recorded_at: datetime = _when()


class Notification(SQLModel, table=True):
    """The outbox: one message to one stakeholder on one channel, sent at least once by key."""

    __tablename__ = "notification"
    __table_args__ = (
        sa.Index("ix_notification_status_next_attempt_at", "status", "next_attempt_at"),
    )
    id: uuid.UUID = _id()
    case_id: uuid.UUID | None = _fk("remediation_case.id", nullable=True)
    event: str = Field(max_length=60)
    # a stakeholder; or none, and the receipt whose reporter is addressed (contact decrypted at
    # delivery, never copied here)
    recipient_id: uuid.UUID | None = _fk("stakeholder.id", nullable=True)
    receipt_id: uuid.UUID | None = _fk("reporter_receipt.id", nullable=True)
    channel: NotificationChannel = _enum(NotificationChannel)
    locale: Locale = _enum(Locale, default=Locale.EN)
    template: str = Field(max_length=100)
    context: dict[str, Any] = _json(default_factory=dict)
    idempotency_key: str = Field(max_length=200, unique=True)
    status: NotificationStatus = _enum(NotificationStatus, default=NotificationStatus.PENDING)
    # pseudonyms the message mentions: a withdrawn consent suppresses it
    mentions: list[str] = _json()
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=500)
    created_at: datetime = _when()
    next_attempt_at: datetime | None = _when(nullable=True)
    # a delivery in progress holds the row until then; after a crash another drain takes it
    claimed_until: datetime | None = _when(nullable=True)
    delivered_at: datetime | None = _when(nullable=True)


class ReminderSent(SQLModel, table=True):
    """A monitoring threshold already acted on (due soon, overdue, escalation n, reminder...).

    The key names the milestone or decision and its deadline, so a sweep never repeats a
    reminder, and an extended deadline gets reminders of its own.
    """

    __tablename__ = "reminder_sent"
    key: str = Field(max_length=160, primary_key=True)
    case_id: uuid.UUID = _fk("remediation_case.id")
    sent_at: datetime = _when()


class ApprovalLink(SQLModel, table=True):
    """A signed, expiring, single-use link to the approval page, sent to one stakeholder."""

    __tablename__ = "approval_link"
    id: uuid.UUID = _id()
    purpose: LinkPurpose = _enum(LinkPurpose)
    case_id: uuid.UUID = _fk("remediation_case.id")
    stakeholder_id: uuid.UUID = _fk("stakeholder.id")
    request_id: uuid.UUID | None = _fk("decision_request.id", nullable=True)
    action_id: uuid.UUID | None = _fk("plan_action.id", nullable=True)
    # the recipient's one-time code (encrypted), so the page can submit it on their behalf
    code_ciphertext: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = _when()
    expires_at: datetime = _when()
    used_at: datetime | None = _when(nullable=True)


class AuditEvent(SQLModel, table=True):
    """One link of a hash chain per case: who did what, when; details hold references only.

    The hash links the chain; the tag authenticates each event (docs/security.md)."""

    __tablename__ = "audit_event"
    __table_args__ = (sa.UniqueConstraint("chain", "seq"),)
    id: int | None = Field(
        default=None,
        sa_column=sa.Column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    )
    chain: str = Field(max_length=40)
    seq: int
    at: datetime = _when()
    actor: str = Field(max_length=80)
    action: str = Field(max_length=80)
    subject_type: str | None = Field(default=None, max_length=40)
    subject_id: str | None = Field(default=None, max_length=64)
    details: dict[str, Any] = _json(default_factory=dict)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)
    # HMAC-SHA256 of the same content under a key kept outside the store (tasks/store/audit.py);
    # None on events written before migration 0010
    tag: str | None = Field(default=None, max_length=64)


class AuditHead(SQLModel, table=True):
    """The newest link of each chain, so a truncated chain is detected too."""

    __tablename__ = "audit_head"
    chain: str = Field(max_length=40, primary_key=True)
    seq: int
    hash: str = Field(max_length=64)


class ReporterReceipt(SQLModel, table=True):
    """A reporter's receipt for a filed report: a public reference and the secret code's hash.

    The code itself is never stored: only its keyed hash (HMAC), so a copied table reveals no
    code. A duplicate report gets a receipt of its own on the case it joins.
    """

    __tablename__ = "reporter_receipt"
    id: uuid.UUID = _id()
    case_id: uuid.UUID = _fk("remediation_case.id")
    receipt_ref: str = Field(max_length=24, unique=True)
    code_hash: str = Field(max_length=64, unique=True)
    filed_at: datetime = _when()
    locale: Locale = _enum(Locale, default=Locale.EN)
    # the reporter agreed to be told by e-mail that there is news (never what it is)
    contact_ok: bool = False
    contact_ciphertext: str | None = Field(default=None, sa_type=sa.Text)
    acknowledged_at: datetime | None = _when(nullable=True)
    acknowledged_by_id: uuid.UUID | None = _fk("stakeholder.id", nullable=True)
    # what the case team chose to tell the reporter with the status (encrypted)
    reason_note_ciphertext: str | None = Field(default=None, sa_type=sa.Text)
    # the status the monitoring sweep last told the reporter of (None: the one at filing), and
    # when the status first showed them a result (planning, under way or closed): feedback
    status_told: ReporterStatus | None = _enum(ReporterStatus, nullable=True)
    status_feedback_at: datetime | None = _when(nullable=True)

    def __repr__(self) -> str:
        return f"ReporterReceipt(receipt_ref={self.receipt_ref!r})"


class ReporterMessage(SQLModel, table=True):
    """One message of the thread between a reporter and the case team; the text is encrypted."""

    __tablename__ = "reporter_message"
    id: uuid.UUID = _id()
    receipt_id: uuid.UUID = _fk("reporter_receipt.id")
    case_id: uuid.UUID = _fk("remediation_case.id")
    from_reporter: bool
    at: datetime = _when(index=True)
    author_id: uuid.UUID | None = _fk("stakeholder.id", nullable=True)  # staff only
    text_ciphertext: str = Field(sa_type=sa.Text)

    def __repr__(self) -> str:
        return f"ReporterMessage(id={self.id!s})"


import models.keys  # noqa: E402  (its table joins SQLModel.metadata)
import models.ledger  # noqa: E402  (its tables join SQLModel.metadata)
import models.retention  # noqa: E402, F401  (its tables join SQLModel.metadata)
