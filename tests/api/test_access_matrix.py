"""The matrix column "another organisation's partner token": every route, every method, aimed at foreign data.

Partner "food" calls every protected route with ids of resources that belong to partner "housing"'s referral. No
answer may be a success on them, no body may carry any of their data, and nothing of theirs may change.
"""

from __future__ import annotations

import pytest

from careplan import jsonutil
from tests.api.test_auth_matrix import protected_routes
from tests.factories import FHIR_JSON

HOUSING, FOOD = "Organization/housing", "Organization/food"
MARKERS = ("Zyxforeign", "foreign-patient", "foreign-sr", "foreign-task", "555-0199")
FOREIGN = {"Patient": "foreign-patient", "ServiceRequest": "foreign-sr", "Task": "foreign-task"}
SCOPE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]}


def _foreign_resources() -> list[dict]:
    return [
        {"resourceType": "Patient", "id": "foreign-patient", "name": [{"family": "Zyxforeign"}],
         "telecom": [{"system": "phone", "value": "555-0199"}]},
        {"resourceType": "ServiceRequest", "id": "foreign-sr", "status": "active", "intent": "order",
         "subject": {"reference": "Patient/foreign-patient"}, "performer": [{"reference": HOUSING}]},
        {"resourceType": "Consent", "id": "foreign-consent", "status": "active", "scope": SCOPE,
         "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
         "patient": {"reference": "Patient/foreign-patient"},
         "provision": {"type": "permit", "actor": [{
             "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                  "code": "IRCP"}]},
             "reference": {"reference": HOUSING}}]}},
        {"resourceType": "Task", "id": "foreign-task", "status": "requested", "intent": "order",
         "focus": {"reference": "ServiceRequest/foreign-sr"}, "for": {"reference": "Patient/foreign-patient"},
         "owner": {"reference": HOUSING}},
    ]


def _body_for(method: str, path: str, resource_type: str, resource_id: str) -> tuple[str | None, str]:
    if method == "PATCH":
        return jsonutil.dumps([{"op": "test", "path": "/id", "value": resource_id}]), "application/json-patch+json"
    if path in ("/fhir", "/fhir/"):
        entries = [{"request": {"method": "GET", "url": f"{t}/{i}"}} for t, i in FOREIGN.items()]
        entries += [{"request": {"method": "GET", "url": f"{t}?_id={i}"}} for t, i in FOREIGN.items()]
        return jsonutil.dumps({"resourceType": "Bundle", "type": "batch", "entry": entries}), FHIR_JSON
    if path.endswith("/_search"):
        return f"_id={resource_id}", "application/x-www-form-urlencoded"
    if method in ("PUT", "POST"):
        resource = next(r for r in _foreign_resources() if r["resourceType"] == resource_type)
        return jsonutil.dumps({**resource, "id": resource_id}), FHIR_JSON
    return None, FHIR_JSON


def _paths(template_path: str) -> list[tuple[str, str, str]]:
    """Return (path, resource_type, resource_id) aiming the route at each foreign resource."""
    variants = []
    for resource_type, resource_id in FOREIGN.items():
        path = template_path.replace("/Patient/p1", f"/{resource_type}/{resource_id}").replace(
            "/Patient", f"/{resource_type}")
        if path.startswith("/fhir/") and path.count("/") == 2 and not path.endswith(("_history", "_search",
                                                                                      "metadata")):
            path = f"{path}?_id={resource_id}"  # type-level conditional interactions and searches
        variants.append((path, resource_type, resource_id))
    return list(dict.fromkeys(variants))


@pytest.fixture
def foreign(app, token_for):
    client = app.test_client()
    admin = {"Authorization": f"Bearer {token_for(role='admin')}"}
    for resource in _foreign_resources():
        response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", data=jsonutil.dumps(resource),
                              content_type=FHIR_JSON, headers=admin)
        assert response.status_code == 201
    return client, admin


def test_another_partner_reaches_nothing_of_ours_on_any_route(app, foreign, token_for):
    client, admin = foreign
    food = {"Authorization": f"Bearer {token_for(role='partner', organization=FOOD, scopes='user/*.cruds')}"}
    housing = {"Authorization": f"Bearer {token_for(role='partner', organization=HOUSING, scopes='user/*.cruds')}"}
    # Sanity: the rightful partner does see them, so the checks below are not vacuous.
    assert client.get("/fhir/Task/foreign-task", headers=housing).status_code == 200
    checked = 0
    for method, template in protected_routes(app):
        if not template.startswith("/fhir"):
            continue
        for path, resource_type, resource_id in _paths(template):
            data, content_type = _body_for(method, path, resource_type, resource_id)
            response = client.open(path, method=method, data=data, content_type=content_type, headers=food)
            text = response.get_data(as_text=True)
            # An id the caller sent itself may be echoed back ("Task/x is not known"); anything else is a leak.
            sent = path + (data or "")
            leaked = [m for m in MARKERS if m in text and m not in sent]
            assert not leaked, f"{method} {path} -> {response.status_code} leaks {leaked}"
            instance_level = f"/{resource_id}" in path.split("?")[0]
            if instance_level:
                assert response.status_code in (403, 404, 405), f"{method} {path} -> {response.status_code}"
            checked += 1
    assert checked > 40
    for resource in _foreign_resources():
        current = jsonutil.loads(client.get(f"/fhir/{resource['resourceType']}/{resource['id']}",
                                            headers=admin).get_data())
        assert current["meta"]["versionId"] == "1", f"{resource['resourceType']} was changed by another partner"
