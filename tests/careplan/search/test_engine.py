"""The search engine without HTTP: the visibility hook, request parsing, cursors and conditional criteria."""

from urllib.parse import parse_qsl

import pytest
from sqlalchemy import not_

from careplan.errors import InvalidRequest
from careplan.models import Resource
from careplan.search import engine
from careplan.search.query import Criterion, criterion_from, parse, split_commas, unescape
from careplan.search.request import Compartment, parse_request
from careplan.store import service

# A stand-in policy: the caller may not see anything whose id starts with "secret".
HIDDEN = not_(Resource.res_id.startswith("secret"))

RESOURCES = [
    {"resourceType": "Organization", "id": "org", "name": "Open Clinic"},
    {"resourceType": "Organization", "id": "secret-org", "name": "Hidden Clinic"},
    {"resourceType": "Patient", "id": "pat", "name": [{"family": "Visible"}],
     "managingOrganization": {"reference": "Organization/secret-org"}},
    {"resourceType": "Patient", "id": "secret-pat", "name": [{"family": "Hidden"}]},
    {"resourceType": "Task", "id": "t-open", "status": "requested", "intent": "order",
     "for": {"reference": "Patient/pat"}, "owner": {"reference": "Organization/secret-org"}},
    {"resourceType": "Task", "id": "secret-task", "status": "requested", "intent": "order",
     "for": {"reference": "Patient/pat"}, "owner": {"reference": "Organization/org"}},
    {"resourceType": "Task", "id": "t-hidden-patient", "status": "requested", "intent": "order",
     "for": {"reference": "Patient/secret-pat"}, "owner": {"reference": "Organization/org"}},
    {"resourceType": "Observation", "id": "secret-obs", "status": "final", "code": {"text": "x"},
     "subject": {"reference": "Patient/pat"}},
]


@pytest.fixture
def stored(database):
    for resource in RESOURCES:
        service.update(database, resource_type=resource["resourceType"], resource_id=resource["id"],
                       resource=resource)
    return database


def run(database, resource_type, query, *, visibility=None, compartment=None, types=None, count=50):
    request = parse_request(parse_qsl(query, keep_blank_values=True),
                            types=types if types is not None or compartment else (resource_type,),
                            strict=True, default_count=count, max_count=1000, compartment=compartment)
    with database.reading() as session:
        result = engine.search(session, request, visibility=visibility)
    return result


def refs(records) -> set[str]:
    return {f"{r.resource_type}/{r.id}" for r in records}


def test_without_a_policy_everything_is_visible(stored):
    assert refs(run(stored, "Task", "status=requested").matches) == {"Task/t-open", "Task/secret-task",
                                                                     "Task/t-hidden-patient"}


def test_visibility_filters_matches_and_totals(stored):
    result = run(stored, "Task", "status=requested", visibility=HIDDEN)
    assert refs(result.matches) == {"Task/t-open", "Task/t-hidden-patient"}
    assert result.total == 2
    assert run(stored, "Task", "_summary=count", visibility=HIDDEN).total == 2


def test_visibility_filters_includes_and_revincludes(stored):
    result = run(stored, "Task", "_id=t-open&_include=Task:owner&_include=Task:patient", visibility=HIDDEN)
    assert refs(result.included) == {"Patient/pat"}
    result = run(stored, "Patient", "_id=pat&_revinclude=*", visibility=HIDDEN)
    assert refs(result.included) == {"Task/t-open"}
    result = run(stored, "Patient", "_id=pat&_revinclude=*")
    assert refs(result.included) == {"Task/t-open", "Task/secret-task", "Observation/secret-obs"}


def test_visibility_applies_inside_chains_and_has(stored):
    assert refs(run(stored, "Task", "owner.name=hidden").matches) == {"Task/t-open"}
    assert refs(run(stored, "Task", "owner.name=hidden", visibility=HIDDEN).matches) == set()
    assert refs(run(stored, "Task", "patient.name=hidden", visibility=HIDDEN).matches) == set()
    assert refs(run(stored, "Patient", "_has:Observation:patient:status=final").matches) == {"Patient/pat"}
    assert refs(run(stored, "Patient", "_has:Observation:patient:status=final", visibility=HIDDEN).matches) == set()
    assert refs(run(stored, "Organization", "_has:Task:owner:status=requested", visibility=HIDDEN).matches) == {
        "Organization/org"}


def test_visibility_applies_to_compartments_and_everything(stored):
    with stored.reading() as session:
        assert engine.compartment_owner(session, "secret-pat") is not None
        assert engine.compartment_owner(session, "secret-pat", visibility=HIDDEN) is None
    everything = run(stored, None, "", visibility=HIDDEN, compartment=Compartment("pat", everything=True),
                     types=None)
    assert refs(everything.matches) == {"Patient/pat", "Task/t-open"}
    assert everything.total == 2
    tasks = run(stored, None, "", visibility=HIDDEN, compartment=Compartment("pat"), types=("Task",))
    assert refs(tasks.matches) == {"Task/t-open"}


def test_visibility_holds_across_pages(stored):
    first = run(stored, "Task", "_count=1", visibility=HIDDEN, count=1)
    assert first.total == 2 and first.next_cursor
    request = parse_request([("_count", "1"), ("_cursor", first.next_cursor)], types=("Task",), strict=True,
                            default_count=1, max_count=10)
    with stored.reading() as session:
        second = engine.search(session, request, visibility=HIDDEN)
    assert refs(first.matches) | refs(second.matches) == {"Task/t-open", "Task/t-hidden-patient"}
    assert second.next_cursor is None


def test_criteria_parsing_of_chains_has_and_modifiers():
    assert criterion_from("subject:Patient.name:exact", "Zoë") == Criterion("subject", "Patient", ("Zoë",),
                                                                            "name:exact")
    assert criterion_from("owner.name", "a,b") == Criterion("owner", None, ("a", "b"), "name")
    assert criterion_from("_has:Observation:patient:code", "1") == Criterion("_has", "Observation:patient:code",
                                                                             ("1",))
    assert criterion_from("status:not", "x").raw_name == "status:not"
    assert criterion_from("_count", "3") is None
    assert [c.name for c in parse([("status", "a"), ("_sort", "x"), ("code", "y")])] == ["status", "code"]


def test_value_escapes():
    assert split_commas(r"a\,b,c") == ["a,b", "c"]
    assert split_commas(r"a\|b,c\\") == [r"a\|b", "c\\\\"]
    assert unescape(r"a\|b\$c\\d") == "a|b$c\\d"


def test_lenient_parsing_reports_ignored_parameters_and_strict_refuses_them():
    request = parse_request([("status", "active"), ("shoe-size", "9"), ("_contained", "true"), ("status", "")],
                            types=("CarePlan",), strict=False, default_count=10, max_count=100)
    assert request.used == (("status", "active"),)
    assert request.ignored == ("shoe-size", "_contained")
    with pytest.raises(InvalidRequest) as caught:
        parse_request([("shoe-size", "9")], types=("CarePlan",), strict=True, default_count=10, max_count=100)
    assert caught.value.issues[0].expression == "shoe-size"


def test_total_default_is_accurate_and_count_is_capped():
    request = parse_request([("_count", "5000")], types=("Task",), strict=True, default_count=10, max_count=100)
    assert request.total == "accurate" and request.count == 100


def test_cursor_from_another_search_is_refused(stored):
    first = run(stored, "Task", "status=requested&_count=1", count=1)
    other = parse_request([("status", "completed"), ("_cursor", first.next_cursor)], types=("Task",), strict=True,
                          default_count=1, max_count=10)
    with stored.reading() as session, pytest.raises(InvalidRequest):
        engine.search(session, other)


def test_conditional_interactions_still_use_the_query_builder(database):
    patient = {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "7"}]}
    first = service.create(database, resource=patient, if_none_exist="identifier=urn:mrn|7")
    second = service.create(database, resource=patient, if_none_exist="identifier=urn:mrn|7")
    assert first.created and not second.created and second.stored.id == first.stored.id
    with pytest.raises(InvalidRequest):
        service.create(database, resource=patient, if_none_exist="shoe-size=9")
