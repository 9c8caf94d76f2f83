"""Vocabulary of a remediation case: every closed list the store, the lifecycle and the forms share.

Pure module: standard library only. Values are stored in the database as their string values.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Step(IntEnum):
    """IOM's six-step operational remediation process."""

    VERIFY = 1
    RESPOND = 2
    PLAN = 3
    IMPLEMENT = 4
    CLOSE = 5
    LESSONS = 6

    @property
    def title(self) -> str:
        return _STEP_TITLES[self]


_STEP_TITLES = {
    Step.VERIFY: "Verify the allegation",
    Step.RESPOND: "Determine the type and level of response",
    Step.PLAN: "Design the remediation action plan",
    Step.IMPLEMENT: "Implement and monitor the plan",
    Step.CLOSE: "Incident closure",
    Step.LESSONS: "Capture lessons learned",
}


class CaseState(StrEnum):
    """Where a case stands in the lifecycle (see models.lifecycle for the transitions)."""

    INTAKE = "intake"
    VERIFYING = "verifying"
    DETERMINING_RESPONSE = "determining_response"
    DESIGNING_PLAN = "designing_plan"
    IMPLEMENTING = "implementing"
    ON_HOLD = "on_hold"
    CLOSING = "closing"
    CLOSED = "closed"
    LESSONS_CAPTURED = "lessons_captured"


class CaseStatus(StrEnum):
    """Coarse status (HTCDS-like) derived from the state, for lists and reports."""

    ACTIVE = "active"
    ON_HOLD = "on_hold"
    CLOSED = "closed"


class CaseEvent(StrEnum):
    """Named events that move a case (see models.lifecycle)."""

    START_VERIFICATION = "start_verification"
    SCREENED_OUT = "screened_out"
    SUBSTANTIATED = "substantiated"
    UNSUBSTANTIATED = "unsubstantiated"
    INCONCLUSIVE = "inconclusive"
    RESPONSE_APPROVED = "response_approved"
    PLAN_APPROVED = "plan_approved"
    PLAN_REVISION_REQUESTED = "plan_revision_requested"
    PLAN_COMPLETED = "plan_completed"
    CLOSE_UNRESOLVED = "close_unresolved"
    CONSENT_WITHDRAWN = "consent_withdrawn"
    CONSENT_RENEWED = "consent_renewed"
    CLOSE_ON_WITHDRAWAL = "close_on_withdrawal"
    CASE_CLOSED = "case_closed"
    LESSONS_RECORDED = "lessons_recorded"
    REOPEN_FOR_VERIFICATION = "reopen_for_verification"
    REOPEN_FOR_REMEDY = "reopen_for_remedy"


class OrganisationType(StrEnum):
    DOWNSTREAM_COMPANY = "downstream_company"
    AUDIT_PROGRAMME = "audit_programme"
    SMELTER_REFINER = "smelter_refiner"
    MINE_OR_ASM_SITE = "mine_or_asm_site"
    TRADER = "trader"
    RECRUITER = "recruiter"
    SUPPLIER = "supplier"
    NGO_SERVICE_PROVIDER = "ngo_service_provider"
    IOM = "iom"
    LAW_ENFORCEMENT = "law_enforcement"
    GOVERNMENT = "government"
    TRADE_UNION = "trade_union"
    LEGAL_SERVICE = "legal_service"
    CLEARING_BODY = "clearing_body"


class Role(StrEnum):
    """Roles a stakeholder plays on a case (one person may hold several)."""

    CASE_LEAD = "case_lead"
    VERIFIER = "verifier"
    SENIOR_APPROVER = "senior_approver"
    BUDGET_OWNER = "budget_owner"
    VICTIM_REPRESENTATIVE = "victim_representative"
    SERVICE_PROVIDER = "service_provider"
    SUPPLIER_CONTACT = "supplier_contact"
    OBSERVER = "observer"


class Locale(StrEnum):
    EN = "en"
    FR = "fr"
    ES = "es"
    SW = "sw"


class SourceType(StrEnum):
    WORKER = "worker"
    THIRD_PARTY = "third_party"
    NGO = "ngo"
    TRADE_UNION = "trade_union"
    MEDIA = "media"
    AUDIT = "audit"
    GRIEVANCE_PLATFORM = "grievance_platform"
    HOTLINE = "hotline"
    SELF_REPORT = "self_report"
    OTHER = "other"


class Channel(StrEnum):
    WEB_FORM = "web_form"
    EMAIL = "email"
    PHONE_HOTLINE = "phone_hotline"
    MESSAGING = "messaging"
    IN_PERSON = "in_person"
    LETTER = "letter"
    GRIEVANCE_PLATFORM = "grievance_platform"
    AUDIT_REPORT = "audit_report"
    MEDIA_MONITORING = "media_monitoring"
    PARTNER_REFERRAL = "partner_referral"


class Mineral(StrEnum):
    TIN = "tin"
    TANTALUM = "tantalum"
    TUNGSTEN = "tungsten"
    GOLD = "gold"
    COBALT = "cobalt"
    COPPER = "copper"
    LITHIUM = "lithium"
    MICA = "mica"
    NICKEL = "nickel"
    OTHER = "other"


class AgeBand(StrEnum):
    UNDER_12 = "under_12"
    AGE_12_14 = "12_to_14"
    AGE_15_17 = "15_to_17"
    AGE_18_24 = "18_to_24"
    AGE_25_34 = "25_to_34"
    AGE_35_49 = "35_to_49"
    AGE_50_PLUS = "50_plus"
    UNKNOWN = "unknown"

    @property
    def is_minor(self) -> bool:
        return self in (AgeBand.UNDER_12, AgeBand.AGE_12_14, AgeBand.AGE_15_17)


class Sex(StrEnum):
    FEMALE = "female"
    MALE = "male"
    OTHER = "other"
    UNKNOWN = "unknown"


class ConsentPurpose(StrEnum):
    CASE_HANDLING = "case_handling"
    CONTACT = "contact"
    SHARE_WITH_SERVICE_PROVIDER = "share_with_service_provider"
    SHARE_WITH_SUPPLIER = "share_with_supplier"
    SHARE_WITH_LAW_ENFORCEMENT = "share_with_law_enforcement"
    FOLLOW_UP = "follow_up"
    PUBLICATION = "publication"


class ConsentMethod(StrEnum):
    WRITTEN = "written"
    VERBAL = "verbal"
    GUARDIAN = "guardian"


class RiskLevel(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    EXTREME = "extreme"


class SafetyRisk(StrEnum):
    """Risks a safety assessment weighs before any contact or supplier notice."""

    RETALIATION = "retaliation"
    TRAFFICKER_CONTACT = "trafficker_contact"
    IMMIGRATION_STATUS = "immigration_status"
    FAMILY = "family"
    HEALTH = "health"
    LOSS_OF_INCOME = "loss_of_income"
    OTHER = "other"


class IndicatorStatus(StrEnum):
    PRESENT = "present"
    ABSENT = "absent"
    UNKNOWN = "unknown"


class IloIndicator(StrEnum):
    """The ILO's 11 indicators of forced labour."""

    ABUSE_OF_VULNERABILITY = "abuse_of_vulnerability"
    DECEPTION = "deception"
    RESTRICTION_OF_MOVEMENT = "restriction_of_movement"
    ISOLATION = "isolation"
    PHYSICAL_SEXUAL_VIOLENCE = "physical_sexual_violence"
    INTIMIDATION_THREATS = "intimidation_threats"
    RETENTION_OF_IDENTITY_DOCUMENTS = "retention_of_identity_documents"
    WITHHOLDING_OF_WAGES = "withholding_of_wages"
    DEBT_BONDAGE = "debt_bondage"
    ABUSIVE_CONDITIONS = "abusive_working_and_living_conditions"
    EXCESSIVE_OVERTIME = "excessive_overtime"


class AnnexIICategory(StrEnum):
    """OECD Due Diligence Guidance, Annex II risk categories (1-5 are serious abuses)."""

    TORTURE_CRUEL_TREATMENT = "torture_cruel_treatment"
    FORCED_LABOUR = "forced_labour"
    WORST_FORMS_CHILD_LABOUR = "worst_forms_child_labour"
    GROSS_HUMAN_RIGHTS_ABUSES = "gross_human_rights_abuses"
    WAR_CRIMES = "war_crimes"
    NON_STATE_ARMED_GROUPS = "non_state_armed_groups"
    SECURITY_FORCES = "security_forces"
    BRIBERY_MISREPRESENTATION = "bribery_misrepresentation"
    MONEY_LAUNDERING = "money_laundering"
    NON_PAYMENT_TAXES = "non_payment_taxes"

    @property
    def is_serious_abuse(self) -> bool:
        return self in _SERIOUS_ABUSES


_SERIOUS_ABUSES = frozenset(
    {
        AnnexIICategory.TORTURE_CRUEL_TREATMENT,
        AnnexIICategory.FORCED_LABOUR,
        AnnexIICategory.WORST_FORMS_CHILD_LABOUR,
        AnnexIICategory.GROSS_HUMAN_RIGHTS_ABUSES,
        AnnexIICategory.WAR_CRIMES,
    }
)


class ScreeningOutcome(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


class Scale(StrEnum):
    """How grave the harm is."""

    LOW = "low"
    MODERATE = "moderate"
    HIGH = "high"
    EXTREME = "extreme"


class Irremediability(StrEnum):
    """How hard the harm is to reverse."""

    REMEDIABLE = "remediable"
    DIFFICULT = "difficult"
    VERY_DIFFICULT = "very_difficult"
    IRREVERSIBLE = "irreversible"


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Involvement(StrEnum):
    """UNGP 19: how the company is involved in the harm."""

    CAUSE = "cause"
    CONTRIBUTE = "contribute"
    DIRECTLY_LINKED = "directly_linked"
    UNKNOWN = "unknown"


class ResponseLevel(StrEnum):
    """How urgent and senior the response must be (level_1 is the most)."""

    LEVEL_1 = "level_1"
    LEVEL_2 = "level_2"
    LEVEL_3 = "level_3"


class RemedyRole(StrEnum):
    """What the company's involvement obliges it to do about remedy (UNGP 22)."""

    PROVIDE = "provide"
    COOPERATE = "cooperate"
    USE_LEVERAGE = "use_leverage"


class RelationshipDecision(StrEnum):
    CONTINUE_WITH_MITIGATION = "continue_with_mitigation"
    SUSPEND = "suspend"
    DISENGAGE = "disengage"


class DecisionKind(StrEnum):
    """Decisions that need an authorised person (docs/domain.md, Decisions)."""

    SCREENING = "screening"
    SAFETY = "safety"
    VERIFICATION = "verification"
    IMPACT_ASSESSMENT = "impact_assessment"
    RESPONSE = "response"
    PLAN_AGREEMENT = "plan_agreement"
    PLAN_BUDGET = "plan_budget"
    PLAN_REVISION = "plan_revision"
    CLOSURE = "closure"
    CLOSURE_CONFIRMATION = "closure_confirmation"
    LESSONS = "lessons"
    MILESTONE_EXTENSION = "milestone_extension"


class DecisionRequestStatus(StrEnum):
    WAITING = "waiting"
    DECIDED = "decided"
    SUPERSEDED = "superseded"
    CANCELLED = "cancelled"


class PlanStatus(StrEnum):
    DRAFT = "draft"
    APPROVED = "approved"
    SUPERSEDED = "superseded"


class ActionKind(StrEnum):
    """What a plan action is: a form of remedy, assistance to a person, or corrective action."""

    REMEDY_FORM = "remedy_form"
    ASSISTANCE = "assistance"
    CORRECTIVE_ACTION = "corrective_action"


class RemedyForm(StrEnum):
    APOLOGY = "apology"
    RESTITUTION = "restitution"
    REHABILITATION = "rehabilitation"
    COMPENSATION = "compensation"
    SANCTION = "sanction"
    NON_REPETITION = "non_repetition"


class AssistanceCategory(StrEnum):
    SAFETY_SECURITY = "safety_security"
    ACCOMMODATION = "accommodation"
    MEDICAL = "medical"
    PSYCHOSOCIAL = "psychosocial"
    LEGAL = "legal"
    RETURN_REINTEGRATION = "return_reintegration"
    LIVELIHOOD_EDUCATION = "livelihood_education"
    FINANCIAL = "financial"


class CorrectiveAction(StrEnum):
    FEE_REIMBURSEMENT = "fee_reimbursement"
    DOCUMENT_RETURN = "document_return"
    BACK_PAY = "back_pay"
    DEBT_CANCELLATION = "debt_cancellation"
    RECRUITER_REPORTED = "recruiter_reported"
    CHILD_REMOVAL_AND_SCHOOLING = "child_removal_and_schooling"
    MANAGEMENT_TRAINING = "management_training"
    POLICY_CHANGE = "policy_change"


class OwedKind(StrEnum):
    """What a person is owed in the remedy ledger (docs/domain.md, The remedy ledger)."""

    RECRUITMENT_FEE = "recruitment_fee"  # fees and related costs, under the Employer Pays Principle
    WITHHELD_WAGES = "withheld_wages"
    ILLEGAL_DEDUCTIONS = "illegal_deductions"
    DEBT_CANCELLED = "debt_cancelled"  # a debt written off: owed as cancelled, not as paid
    COMPENSATION = "compensation"


class MilestoneStatus(StrEnum):
    PLANNED = "planned"
    ACTIVE = "active"
    DONE = "done"
    VERIFIED = "verified"
    WAIVED = "waived"
    CANCELLED = "cancelled"
    # the person the action is for withdrew case-handling consent: nothing moves until renewal
    HELD = "held"


class ClosureType(StrEnum):
    RESOLVED_ACCEPTED = "resolved_accepted"
    RESOLVED_REJECTED = "resolved_rejected"
    UNRESOLVED_AUTHORISED = "unresolved_authorised"
    INCONCLUSIVE_NO_CONTACT = "inconclusive_no_contact"
    NO_BASIS = "no_basis"
    DUPLICATE = "duplicate"
    REFERRED_EXTERNAL = "referred_external"
    CONSENT_WITHDRAWN = "consent_withdrawn"


class NotificationChannel(StrEnum):
    EMAIL = "email"
    CHAT = "chat"


class ChatKind(StrEnum):
    SLACK = "slack"
    MSTEAMS = "msteams"
    MATTERMOST = "mattermost"
    MATRIX = "matrix"
    JSON = "json"


class NotificationStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    SUPPRESSED = "suppressed"


class StepRunStatus(StrEnum):
    """An entry of a case into a step, and the Prefect run that carries it."""

    PENDING = "pending"
    STARTED = "started"
    FINISHED = "finished"


class RootCause(StrEnum):
    """Coded root causes for lessons learned (docs/domain.md, 6. Capture lessons learned)."""

    RECRUITMENT_FEES = "recruitment_fees"
    DECEPTIVE_RECRUITMENT = "deceptive_recruitment"
    PURCHASING_PRACTICES = "purchasing_practices"
    WEAK_AGE_VERIFICATION = "weak_age_verification"
    DOCUMENT_RETENTION = "document_retention"
    WAGE_RECORD_GAPS = "wage_record_gaps"
    NO_GRIEVANCE_CHANNEL = "no_grievance_channel"
    AUDIT_GAPS = "audit_gaps"
    UNAUTHORISED_SUBCONTRACTING = "unauthorised_subcontracting"
    ARMED_GROUP_CONTROL = "armed_group_control"
    WEAK_SUPPLIER_DUE_DILIGENCE = "weak_supplier_due_diligence"
    OTHER = "other"


class LinkPurpose(StrEnum):
    """What a signed link to the approval page lets its recipient do."""

    DECIDE = "decide"
    PROGRESS = "progress"
    ENROL = "enrol"


class EmailFormat(StrEnum):
    HTML = "html"
    TEXT = "text"


class NotificationEvent(StrEnum):
    """What a notification tells its recipient (notifications/routing.toml routes each)."""

    CASE_OPENED = "case_opened"
    DECISION_REQUESTED = "decision_requested"
    DECISION_REMINDER = "decision_reminder"
    DECISION_ESCALATED = "decision_escalated"
    DECISION_TAKEN = "decision_taken"
    DECISION_REFUSED = "decision_refused"
    PLAN_APPROVED = "plan_approved"
    MILESTONE_ASSIGNED = "milestone_assigned"
    MILESTONE_DUE_SOON = "milestone_due_soon"
    MILESTONE_OVERDUE = "milestone_overdue"
    MILESTONE_ESCALATED = "milestone_escalated"
    MILESTONE_VERIFIED = "milestone_verified"
    CASE_CLOSED = "case_closed"
    # the signed checkpoint taken at the closure, to keep outside the store (docs/security.md)
    AUDIT_CHECKPOINT = "audit_checkpoint"
    LESSONS_READY = "lessons_ready"
    # passkeys for approvers (tasks/web/enrolment.py, tasks/web/passkeys.py)
    PASSKEY_INVITED = "passkey_invited"  # the enrolment link, by e-mail
    PASSKEY_CODE = "passkey_code"  # its one-time code, over the person's other channel (chat)
    PASSKEY_MISSING = "passkey_missing"  # a decision waits for someone without a passkey
    # the reporter's way back (tasks/reporter/): never the message's content
    REPORTER_MESSAGE = "reporter_message"  # to the case team: the reporter wrote
    REPORTER_NEWS = "reporter_news"  # to the reporter's own contact: there is news
    # a reporter's deadlines (tasks/monitoring/reporter_deadlines.py): the case lead is reminded
    # before each, and once it passes unmet it is escalated
    REPORTER_ACK_DUE = "reporter_ack_due"
    REPORTER_ACK_MISSED = "reporter_ack_missed"
    REPORTER_FEEDBACK_DUE = "reporter_feedback_due"
    REPORTER_FEEDBACK_MISSED = "reporter_feedback_missed"


class Visibility(StrEnum):
    """How much of a case a recipient's e-mail may show (chat always gets the least)."""

    MINIMAL = "minimal"  # case reference, event, dates, links
    CASE = "case"  # + country, mineral, severity, response level, titles
    NARRATIVE = "narrative"  # + pseudonyms and the allegation's narrative


class ReporterStatus(StrEnum):
    """Where a report stands, in the words a reporter sees on the follow-up page."""

    RECEIVED = "received"  # filed, not yet looked at
    BEING_VERIFIED = "being_verified"  # step 1
    PLANNING = "planning"  # steps 2-3: response decided, plan being designed
    UNDER_WAY = "under_way"  # step 4: plan being implemented
    CLOSED = "closed"  # step 5 onwards, or screened out / unsubstantiated


class ClosedReason(StrEnum):
    """What a reporter may see about why a case closed (mapped from ClosureType)."""

    REMEDY_DELIVERED = "remedy_delivered"
    NOT_SUBSTANTIATED = "not_substantiated"
    DUPLICATE = "duplicate"
    REFERRED_ELSEWHERE = "referred_elsewhere"
    NO_CONTACT = "no_contact"
    OTHER = "other"
