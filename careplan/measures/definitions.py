"""The written definitions of the quality-improvement measures of issue 8 (population, numerator, exclusions, period).

Every measure is evaluated per ISO week (Monday to Sunday) or calendar month, in UTC. The "event" of a measure decides
which period a person or referral falls in (identification date, referral sent date, reminder due date, discharge
date, or a snapshot at the period's last day). Sources: /work/shared/reference/domain.md section 6.2 (HQO Health
Links, Gravity closed-loop referral, HQO/HEDIS follow-up after hospitalisation).
"""

from __future__ import annotations

from dataclasses import dataclass

BASE = "https://careplan.example.org/fhir"
PROPORTION = "proportion"
CONTINUOUS = "continuous"


@dataclass(frozen=True)
class MeasureDefinition:
    """What a measure counts, in words a programme lead can check, plus how it is scored."""

    id: str
    title: str
    description: str
    population: str
    numerator: str
    denominator: str
    exclusions: str
    kind: str  # "proportion" | "continuous"
    unit: str  # "%" for proportions, "days" for medians
    subject: str  # "patient" | "referral" | "reminder" | "activity" | "discharge"
    period_event: str  # what places a member in a period
    improvement: str = "increase"  # "increase" | "decrease"

    @property
    def url(self) -> str:
        """Return the canonical URL of the FHIR Measure."""
        return f"{BASE}/Measure/{self.id}"


DEFINITIONS: tuple[MeasureDefinition, ...] = (
    MeasureDefinition(
        id="ccp-within-30-days",
        title="Active coordinated care plan within 30 days of identification",
        description="Share of people identified for coordinated care who had an active coordinated care plan, with at "
                    "least one goal and a care team of two or more, no later than 30 days after being identified.",
        population="Patients with a coordinated-care EpisodeOfCare whose identification date (the "
                   "coordinated-care-identification extension's identifiedOn, else period.start) falls in the period.",
        numerator="Patients of the denominator for whom, no later than the end of the 30th day after identification, "
                  "a coordinated CarePlan version was active with at least one goal while its CareTeam had at least "
                  "two participants (a plan already active on the identification date counts).",
        denominator="The population minus the exclusions.",
        exclusions="The patient died within 30 days of identification (Patient.deceased[x]); the episode was "
                   "cancelled (declined or moved away before a plan) or entered in error; identified less than 30 days "
                   "before now without such a plan yet (not yet assessable).",
        kind=PROPORTION, unit="%", subject="patient", period_event="identification date"),
    MeasureDefinition(
        id="days-to-ccp",
        title="Median days from identification to an active coordinated care plan",
        description="How long people wait, from identification to their first active coordinated care plan "
                    "(with a goal and a care team of two or more).",
        population="Patients identified in the period (as for ccp-within-30-days) who have had such a plan.",
        numerator="Not applicable (continuous): the value is the median of the members' days.",
        denominator="The measure population: identified patients who have reached such a plan, minus exclusions.",
        exclusions="Episodes cancelled or entered in error; a plan active before identification counts as 0 days.",
        kind=CONTINUOUS, unit="days", subject="patient", period_event="identification date",
        improvement="decrease"),
    MeasureDefinition(
        id="referral-response-within-sla",
        title="Referrals accepted or declined within the partner service level",
        description="Share of referrals a partner agency answered (accepted or declined) within the response service "
                    "level (CAREPLAN_SLA_RESPONSE_BUSINESS_DAYS business days in the agency's time zone).",
        population="Referral Tasks (intent order, owner an Organization, focus a ServiceRequest) first sent (status "
                   "requested or received) in the period.",
        numerator="Referrals of the denominator whose first response (a version in accepted, rejected or beyond) "
                  "came no later than the response due time.",
        denominator="The population minus the exclusions.",
        exclusions="Entered in error; withdrawn (cancelled) by the requester before any response and before the due "
                   "time; still unanswered while the due time has not passed yet (not yet assessable).",
        kind=PROPORTION, unit="%", subject="referral", period_event="referral sent date"),
    MeasureDefinition(
        id="closed-loop-30-days",
        title="Closed-loop referral rate (30 days)",
        description="Share of referrals that reached a final status with a reason or outcome recorded within 30 days "
                    "of being sent.",
        population="Referral Tasks first sent in the period.",
        numerator="Referrals of the denominator that reached completed, failed, rejected or cancelled with a "
                  "statusReason or an output recorded, no later than 30 days after being sent.",
        denominator="The population minus the exclusions.",
        exclusions="Entered in error; sent less than 30 days before now and not closed yet (not yet assessable).",
        kind=PROPORTION, unit="%", subject="referral", period_event="referral sent date"),
    MeasureDefinition(
        id="got-help",
        title="Got-help rate",
        description="Share of referrals completed with an outcome showing the service was received.",
        population="Referral Tasks first sent in the period.",
        numerator="Referrals of the denominator with status completed and an output whose value is the outcome code "
                  "got-help (or a reference to the Procedure performed, as in the Gravity IG).",
        denominator="The population minus the exclusions.",
        exclusions="Entered in error.",
        kind=PROPORTION, unit="%", subject="referral", period_event="referral sent date"),
    MeasureDefinition(
        id="days-to-first-contact",
        title="Median days from referral to first contact",
        description="How long people wait between a referral being sent and the partner's first contact with them.",
        population="Referral Tasks first sent in the period that have a first contact (a version in in-progress or "
                   "completed, or businessStatus client-contacted).",
        numerator="Not applicable (continuous): the value is the median of the members' days (to 0.1 day).",
        denominator="The measure population minus exclusions.",
        exclusions="Entered in error.",
        kind=CONTINUOUS, unit="days", subject="referral", period_event="referral sent date",
        improvement="decrease"),
    MeasureDefinition(
        id="follow-ups-on-time",
        title="Follow-up reminders completed on time, by practice tier",
        description="Share of scheduled follow-ups done by their due time; stratify by tier to compare recommended, "
                    "promising and emerging practices.",
        population="Reminder rows of kind follow-up whose due time falls in the period.",
        numerator="Follow-ups of the denominator done on time: done_at no later than the follow-up's due moment "
                  "(payload due; the reminder's due_at is when it goes out, the tier's lead time earlier).",
        denominator="The population minus the exclusions.",
        exclusions="Reminders withdrawn (cancelled with the follow-up not done: the activity or plan closed); "
                   "reminders not done whose due time has not passed yet. A follow-up done before its reminder "
                   "went out counts (its reminder is cancelled with done_at set).",
        kind=PROPORTION, unit="%", subject="reminder", period_event="reminder due date"),
    MeasureDefinition(
        id="practice-adoption",
        title="Practice adoption: share of active plan activities from recommended practices",
        description="Share of the activities of active coordinated care plans that come from recommended practices; "
                    "stratify by tier for the share of each tier (recommended, promising, emerging, none).",
        population="Activities of coordinated CarePlans active on the period's last day (the plan version current "
                   "then), whose detail.status is not-started, scheduled, in-progress or on-hold.",
        numerator="Activities whose practice (detail.instantiatesCanonical, a catalogue PlanDefinition) has the tier "
                  "recommended (with the tier stratifier: the stratum's tier).",
        denominator="The population.",
        exclusions="Completed, cancelled, stopped, unknown or entered-in-error activities; plans not active.",
        kind=PROPORTION, unit="%", subject="activity", period_event="snapshot on the period's last day"),
    MeasureDefinition(
        id="follow-up-7-days-after-hospitalisation",
        title="Seven-day follow-up after a mental-health or addictions hospitalisation",
        description="Share of mental-health and addictions discharges followed by an outpatient or community "
                    "visit or a coordinator contact within 7 days (computed when Encounter data is present).",
        population="Finished inpatient Encounters (class IMP, ACUTE or NONAC) with a mental-health or addictions "
                   "reason or diagnosis (ICD-10 F00-F99 or X60-X84, or SNOMED CT 74732009 / 66214007 and a few "
                   "children) whose discharge (period.end) falls in the period.",
        numerator="Discharges followed, on day 1 to 7 after the discharge date, by an outpatient or community "
                  "Encounter (any class but inpatient or emergency, not cancelled) or a completed Communication "
                  "with the patient (sender or recipient). Same-day contacts do not count (HEDIS FUH).",
        denominator="The population minus the exclusions.",
        exclusions="The patient died within 7 days of discharge; readmitted as an inpatient within 7 days (the later "
                   "discharge is the index); discharges less than 7 days before now without follow-up yet (not yet "
                   "assessable).",
        kind=PROPORTION, unit="%", subject="discharge", period_event="discharge date"),
)

BY_ID = {definition.id: definition for definition in DEFINITIONS}
