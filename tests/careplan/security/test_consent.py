"""Consent directives: permit/deny by actor, class, security label and period; implied vs express consent."""

from datetime import datetime, timezone

from careplan.security.consent import Request, decide
from careplan.security.labels import Labels

NOW = datetime(2026, 11, 22, 12, tzinfo=timezone.utc)
HOUSING = "Organization/housing"
SCOPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]}


def consent(provision, status="active", **extra):
    return {"resourceType": "Consent", "id": extra.pop("id", "c1"), "status": status, "scope": SCOPE,
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": "Patient/p1"}, "provision": provision, **extra}


def actor(reference):
    return [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                  "code": "IRCP"}]}, "reference": {"reference": reference}}]


def ask(labels=Labels(), resource_type="ServiceRequest", who=HOUSING, when=NOW):
    return Request(frozenset({who}), resource_type, labels, when)


SUD = Labels("R", frozenset({"ETH", "SUD"}))


def test_partner_needs_express_consent():
    assert not decide([], ask(), express_consent_required=True).permitted
    permit = consent({"type": "permit", "actor": actor(HOUSING)})
    decision = decide([permit], ask(), express_consent_required=True)
    assert decision.permitted and decision.consent_ids == ("c1",)


def test_permit_for_another_organisation_does_not_help():
    permit = consent({"type": "permit", "actor": actor("Organization/food-bank")})
    assert not decide([permit], ask(), express_consent_required=True).permitted


def test_sensitive_data_needs_a_permit_that_names_the_label():
    general = consent({"type": "permit", "actor": actor(HOUSING)})
    assert not decide([general], ask(SUD), express_consent_required=True).permitted
    specific = consent({"type": "permit", "actor": actor(HOUSING),
                        "securityLabel": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "ETH"}]})
    assert decide([specific], ask(SUD), express_consent_required=True).permitted


def test_nested_deny_carves_out_a_class():
    permit_but_not_conditions = consent({"type": "permit", "actor": actor(HOUSING), "provision": [
        {"type": "deny", "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Condition"}]}]})
    assert decide([permit_but_not_conditions], ask(), express_consent_required=True).permitted
    assert not decide([permit_but_not_conditions], ask(resource_type="Condition"),
                      express_consent_required=True).permitted


def test_lockbox_deny_overrides_implied_consent_for_the_circle_of_care():
    lockbox = consent({"type": "deny", "actor": actor("Organization/clinic"),
                       "securityLabel": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]})
    psy = Labels("R", frozenset({"PSY"}))
    assert not decide([lockbox], ask(psy, who="Organization/clinic"), express_consent_required=False).permitted
    assert decide([lockbox], ask(Labels(), who="Organization/clinic"), express_consent_required=False).permitted
    assert decide([], ask(psy, who="Organization/clinic"), express_consent_required=False).permitted


def test_revoked_expired_and_future_consents_do_not_count():
    provision = {"type": "permit", "actor": actor(HOUSING)}
    assert not decide([consent(provision, status="inactive")], ask(), express_consent_required=True).permitted
    expired = {**provision, "period": {"start": "2025-01-01", "end": "2026-06-30"}}
    assert not decide([consent(expired)], ask(), express_consent_required=True).permitted
    future = {**provision, "period": {"start": "2027-01-01"}}
    assert not decide([consent(future)], ask(), express_consent_required=True).permitted
    current = {**provision, "period": {"start": "2026-01-01", "end": "2026-12-31"}}
    assert decide([consent(current)], ask(), express_consent_required=True).permitted


def test_deny_from_any_consent_wins():
    permit = consent({"type": "permit", "actor": actor(HOUSING)}, id="yes")
    deny = consent({"type": "deny", "actor": actor(HOUSING)}, id="no")
    decision = decide([permit, deny], ask(), express_consent_required=True)
    assert not decision.permitted and decision.consent_ids == ("no",)


def test_other_scopes_are_ignored():
    research = consent({"type": "permit", "actor": actor(HOUSING)},
                       scope={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research"}]})
    assert not decide([research], ask(), express_consent_required=True).permitted
