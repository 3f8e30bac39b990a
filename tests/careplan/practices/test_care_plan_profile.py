"""The coordinated care plan profile is enforced inside the store's write path, with FHIRPath-located errors."""

import pytest

from careplan.errors import InvalidResource, UnprocessableEntity
from careplan.store import service
from tests.careplan.practices.support import BASE, activity, coordinated_plan, load_catalogue
from tests.factories import careplan


@pytest.fixture
def stocked(database):
    load_catalogue(database)
    return database


def _expressions(error):
    return [issue.expression for issue in error.issues]


def test_a_conforming_plan_is_stored(stocked):
    result = service.create(stocked, resource=coordinated_plan())
    assert result.created and result.stored.content["status"] == "active"


def test_a_plan_that_claims_nothing_is_not_checked(stocked):
    assert service.create(stocked, resource=careplan()).created
    assert service.create(stocked, resource=careplan()).created  # two active plain plans for one patient are fine


def _without(key):
    plan = coordinated_plan()
    del plan[key]
    return plan


def _activity_change(index, change):
    plan = coordinated_plan()
    change(plan["activity"][index])
    return plan


CASES = {
    "profile-not-declared": (_without("meta"), "CarePlan.meta.profile"),
    "category-missing": (_without("category"), "CarePlan.category"),
    "subject-not-a-patient": (coordinated_plan(subject={"reference": "Group/g1"}), "CarePlan.subject"),
    "subject-missing": (_without("subject"), "CarePlan.subject"),
    "intent-not-plan": (coordinated_plan(intent="order"), "CarePlan.intent"),
    "author-missing": (_without("author"), "CarePlan.author"),
    "care-team-missing": (_without("careTeam"), "CarePlan.careTeam"),
    "two-care-teams": (coordinated_plan(careTeam=[{"reference": "CareTeam/a"}, {"reference": "CareTeam/b"}]),
                       "CarePlan.careTeam"),
    "addresses-missing": (_without("addresses"), "CarePlan.addresses"),
    "practice-missing": (_activity_change(1, lambda a: a["detail"].pop("instantiatesCanonical")),
                         "CarePlan.activity[1].detail.instantiatesCanonical"),
    "two-practices": (_activity_change(2, lambda a: a["detail"]["instantiatesCanonical"].append(
        f"{BASE}/PlanDefinition/peer-support")), "CarePlan.activity[2].detail.instantiatesCanonical"),
    "cadence-missing": (_activity_change(1, lambda a: a["detail"].pop("scheduledTiming")),
                        "CarePlan.activity[1].detail.scheduledTiming"),
    "cadence-not-a-timing": (_activity_change(0, lambda a: a["detail"].update(
        {"scheduledString": "every week"}) or a["detail"].pop("scheduledTiming")),
        "CarePlan.activity[0].detail.scheduledTiming"),
    "performer-missing": (_activity_change(2, lambda a: a["detail"].pop("performer")),
                          "CarePlan.activity[2].detail.performer"),
    "reference-only-activity": (coordinated_plan(activity=[activity("peer-support"),
                                                           {"reference": {"reference": "ServiceRequest/s1"}}]),
                                "CarePlan.activity[1].detail"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_each_profile_rule_fails_with_its_expression(stocked, case):
    plan, expression = CASES[case]
    with pytest.raises(InvalidResource) as caught:
        service.create(stocked, resource=plan)
    assert _expressions(caught.value) == [expression]
    assert caught.value.status == 400


def test_every_broken_rule_is_reported_at_once(stocked):
    plan = coordinated_plan(intent="proposal")
    del plan["author"]
    plan["activity"][0]["detail"].pop("performer")
    with pytest.raises(InvalidResource) as caught:
        service.create(stocked, resource=plan)
    assert _expressions(caught.value) == ["CarePlan.intent", "CarePlan.author", "CarePlan.activity[0].detail.performer"]


def test_a_practice_not_in_the_catalogue_is_a_business_rule_error(stocked):
    plan = coordinated_plan()
    plan["activity"][1]["detail"]["instantiatesCanonical"] = [f"{BASE}/PlanDefinition/no-such-practice"]
    with pytest.raises(UnprocessableEntity) as caught:
        service.create(stocked, resource=plan)
    assert _expressions(caught.value) == ["CarePlan.activity[1].detail.instantiatesCanonical"]
    assert caught.value.status == 422 and caught.value.issues[0].code == "business-rule"
    assert "no-such-practice" in caught.value.issues[0].diagnostics


def test_a_retired_or_deleted_practice_cannot_be_planned(stocked):
    retired = service.read(stocked, resource_type="PlanDefinition", resource_id="peer-support").content
    service.update(stocked, resource_type="PlanDefinition", resource_id="peer-support",
                   resource={**retired, "status": "retired"})
    service.delete(stocked, resource_type="PlanDefinition", resource_id="single-point-of-contact")
    plan = coordinated_plan(activity=[activity("peer-support"), activity("case-conference-with-patient"),
                                      activity("single-point-of-contact")])
    with pytest.raises(UnprocessableEntity) as caught:
        service.create(stocked, resource=plan)
    assert _expressions(caught.value) == ["CarePlan.activity[0].detail.instantiatesCanonical",
                                          "CarePlan.activity[2].detail.instantiatesCanonical"]


def test_without_the_catalogue_no_practice_exists(database):
    with pytest.raises(UnprocessableEntity):
        service.create(database, resource=coordinated_plan())


def test_one_active_coordinated_plan_per_patient(stocked):
    first = service.create(stocked, resource=coordinated_plan()).stored
    with pytest.raises(UnprocessableEntity) as caught:
        service.create(stocked, resource=coordinated_plan())
    assert f"CarePlan/{first.id}" in caught.value.issues[0].diagnostics
    assert _expressions(caught.value) == ["CarePlan.status"]
    # a draft for the same patient, and an active plan for another patient, are allowed
    draft = service.create(stocked, resource=coordinated_plan(status="draft")).stored
    service.create(stocked, resource=coordinated_plan(subject={"reference": "Patient/p2"}))
    # revising the active plan itself is allowed and keeps its history
    revised = service.update(stocked, resource_type="CarePlan", resource_id=first.id,
                             resource={**first.content, "title": "Revised together"}).stored
    assert revised.version_id == 2
    # activating the draft while the first is active is not, by update or by patch
    with pytest.raises(UnprocessableEntity):
        service.update(stocked, resource_type="CarePlan", resource_id=draft.id,
                       resource={**draft.content, "status": "active"})
    with pytest.raises(UnprocessableEntity):
        service.patch(stocked, resource_type="CarePlan", resource_id=draft.id,
                      operations=[{"op": "replace", "path": "/status", "value": "active"}])
    # once the first is completed the draft may become the active plan
    service.patch(stocked, resource_type="CarePlan", resource_id=first.id,
                  operations=[{"op": "replace", "path": "/status", "value": "completed"}])
    activated = service.update(stocked, resource_type="CarePlan", resource_id=draft.id,
                               resource={**draft.content, "status": "active"}).stored
    assert activated.content["status"] == "active"


def test_a_deleted_active_plan_does_not_block_a_new_one(stocked):
    first = service.create(stocked, resource=coordinated_plan()).stored
    service.delete(stocked, resource_type="CarePlan", resource_id=first.id)
    assert service.create(stocked, resource=coordinated_plan()).created


def test_a_second_active_plan_in_the_same_transaction_is_refused(stocked):
    with pytest.raises(UnprocessableEntity):
        with stocked.writing() as session:
            service.create_in(session, resource=coordinated_plan())
            service.create_in(session, resource=coordinated_plan())
    with stocked.reading() as session:
        assert service.matches_in(session, resource_type="CarePlan", criteria=[("subject", "Patient/p1")]) == []


def test_a_plan_can_be_closed_after_one_of_its_practices_is_retired_but_not_given_new_ones(stocked):
    plan = service.create(stocked, resource=coordinated_plan()).stored
    practice = service.read(stocked, resource_type="PlanDefinition", resource_id="single-point-of-contact").content
    service.update(stocked, resource_type="PlanDefinition", resource_id="single-point-of-contact",
                   resource={**practice, "status": "retired"})
    closed = service.update(stocked, resource_type="CarePlan", resource_id=plan.id,
                            resource={**plan.content, "status": "completed"}).stored
    assert closed.content["status"] == "completed"
    with pytest.raises(UnprocessableEntity) as caught:
        service.create(stocked, resource=coordinated_plan(status="draft"))
    assert _expressions(caught.value) == ["CarePlan.activity[1].detail.instantiatesCanonical"]
