"""The starter practice catalogue: valid R4, sourced, covering every tier and theme; listed in tier order."""

import json
from pathlib import Path

import pytest

from careplan import seeding
from careplan.practices import catalogue
from careplan.practices.tiers import TIER_ORDER, tier_of
from careplan.search.parameters import DEFAULT_FHIR_DIR
from careplan.store import service
from careplan.validation import validate_resource
from tests.careplan.practices.support import BASE, load_catalogue

RESOURCES = catalogue.load_files()
PRACTICES = [r for r in RESOURCES if r["resourceType"] == "PlanDefinition"]
THEMES = {"health-equity-sdoh", "social-community-partnerships", "trust-relationships"}


def _by_url(url):
    (resource,) = [r for r in RESOURCES if r.get("url") == url]
    return resource


def _codes(code_system):
    return {c["code"] for c in code_system["concept"]}


@pytest.mark.parametrize("path", catalogue.catalogue_files(), ids=lambda p: p.name)
def test_every_catalogue_file_is_a_valid_r4_resource(path):
    resource = json.loads(path.read_text(encoding="utf-8"))
    assert validate_resource(resource) in {"CodeSystem", "ValueSet", "StructureDefinition", "PlanDefinition"}
    assert resource["url"] == f"{BASE}/{resource['resourceType']}/{resource['id']}"
    assert resource["status"] == "active"


def test_the_contract_code_systems_hold_their_codes():
    assert _codes(_by_url(f"{BASE}/CodeSystem/practice-tier")) == set(TIER_ORDER)
    tier = _by_url(f"{BASE}/CodeSystem/practice-tier")
    assert all(c["definition"] for c in tier["concept"])
    assert _codes(_by_url(f"{BASE}/CodeSystem/practice-theme")) == THEMES
    assert _codes(_by_url(f"{BASE}/CodeSystem/care-plan-category")) == {"coordinated-care-plan"}
    assert _codes(_by_url(f"{BASE}/CodeSystem/care-team-role")) == {
        "patient", "coordinator", "trusted-support-person", "provider", "partner-agency"}
    assert _codes(_by_url(f"{BASE}/CodeSystem/social-need")) == {"legal-needs"}


def test_service_categories_keep_the_codes_the_labeling_rules_use():
    rules = json.loads((DEFAULT_FHIR_DIR / "security" / "labeling-rules.json").read_text(encoding="utf-8"))
    labelled = {code for rule in rules["rules"] if f"{BASE}/CodeSystem/service-category" in rule["systems"]
                for code in rule["codes"]}
    categories = _codes(_by_url(f"{BASE}/CodeSystem/service-category"))
    assert labelled and labelled <= categories
    assert {"peer-support", "housing", "food", "income-support", "transportation", "legal"} <= categories


def test_social_need_domains_use_gravity_codes_and_a_local_legal_code():
    compose = _by_url(f"{BASE}/ValueSet/social-need-domain")["compose"]["include"]
    codes = {(i["system"], c["code"]) for i in compose for c in i["concept"]}
    gravity = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
    for code in ("food-insecurity", "housing-instability", "transportation-insecurity", "financial-insecurity",
                 "employment-status", "educational-attainment", "social-connection", "intimate-partner-violence"):
        assert (gravity, code) in codes
    assert (f"{BASE}/CodeSystem/social-need", "legal-needs") in codes


def test_every_extension_the_practices_use_is_defined_in_the_catalogue():
    defined = {r["url"] for r in RESOURCES if r["resourceType"] == "StructureDefinition" and r["type"] == "Extension"}
    used = {e["url"] for p in PRACTICES for e in p["extension"]}
    assert used <= defined
    assert f"{BASE}/StructureDefinition/coordinated-care-plan" in {r["url"] for r in RESOURCES}


@pytest.mark.parametrize("practice", PRACTICES, ids=lambda p: p["id"])
def test_every_practice_says_where_it_and_its_tier_come_from(practice):
    assert practice["url"] == catalogue.PRACTICE_URL_PREFIX + practice["id"]
    assert practice["type"]["coding"][0]["code"] == "clinical-protocol"
    assert practice["title"] and practice["description"]
    assert tier_of(practice) in TIER_ORDER
    assert set(catalogue.themes_of(practice)) <= THEMES and catalogue.themes_of(practice)
    assert catalogue.follow_up_cadence(practice)["repeat"]["period"] > 0
    sources = [a["url"] for a in practice["relatedArtifact"]]
    assert sources and all(url.startswith(("http://", "https://")) for url in sources)
    provenance = catalogue.tier_provenance_of(practice)
    if provenance.startswith("HQO-assessed: "):
        # the assessing source is cited, and the tier it names is the one the practice carries
        assessed = provenance.removeprefix("HQO-assessed: ")
        assert assessed.startswith(tier_of(practice) + " (")
        assert assessed[len(tier_of(practice)) + 2:-1] in sources
        assert catalogue.endorsement_of(practice)
    else:
        assert provenance.startswith("provisional: tier not published by the source")


def test_the_catalogue_covers_every_tier_and_theme_with_the_published_tiers_as_published():
    assert 10 <= len(PRACTICES) <= 14
    assert {tier_of(p) for p in PRACTICES} == set(TIER_ORDER)
    assert {t for p in PRACTICES for t in catalogue.themes_of(p)} == THEMES
    by_id = {p["id"]: p for p in PRACTICES}
    assert tier_of(by_id["notify-community-providers-of-admission"]) == "promising"
    assert tier_of(by_id["collaborate-in-hospital-on-care-plan"]) == "emerging"
    trusted = by_id["customize-approach-trusted-relationships"]
    assert trusted["title"] == ("Customize the Approach to Coordinated Care Management by Leveraging or Building "
                                "Trusted Relationships to Improve Engagement")
    assert catalogue.tier_provenance_of(trusted).startswith("provisional:")


def test_list_practices_orders_the_stored_practices_by_tier_then_title(database):
    load_catalogue(database)
    with database.reading() as session:
        listed = catalogue.list_practices(session)
    assert len(listed) == len(PRACTICES)
    keys = [(TIER_ORDER.index(tier_of(p)), p["title"].casefold()) for p in listed]
    assert keys == sorted(keys)
    assert [tier_of(p) for p in listed][0] == "recommended" and tier_of(listed[-1]) == "emerging"


def test_list_practices_leaves_out_retired_and_deleted_practices(database):
    load_catalogue(database)
    retired = {**next(p for p in PRACTICES if p["id"] == "peer-support"), "status": "retired"}
    service.update(database, resource_type="PlanDefinition", resource_id="peer-support", resource=retired)
    service.delete(database, resource_type="PlanDefinition", resource_id="single-point-of-contact")
    with database.reading() as session:
        listed = {p["id"] for p in catalogue.list_practices(session)}
        with_retired = {p["id"] for p in catalogue.list_practices(session, include_retired=True)}
        assert catalogue.practice_by_url(session, f"{BASE}/PlanDefinition/peer-support") is None
        assert catalogue.practice_by_url(session, f"{BASE}/PlanDefinition/single-point-of-contact") is None
        assert catalogue.practice_by_url(session, f"{BASE}/PlanDefinition/case-conference-with-patient|1")
        assert catalogue.practice_by_url(session, f"{BASE}/PlanDefinition/case-conference-with-patient|2") is None
    assert len(listed) == len(PRACTICES) - 2
    assert "peer-support" in with_retired and "single-point-of-contact" not in with_retired


def test_seed_loads_the_catalogue_and_is_idempotent(database):
    fhir_dir = Path(DEFAULT_FHIR_DIR)
    expected = len(list(seeding.resources_in(fhir_dir)))
    first = seeding.load(database, fhir_dir)
    assert (first.created, first.updated, first.unchanged) == (expected, 0, 0)
    second = seeding.load(database, fhir_dir)
    assert (second.created, second.updated, second.unchanged) == (0, 0, expected)
    with database.reading() as session:
        assert len(catalogue.list_practices(session)) == len(PRACTICES)
        for resource in RESOURCES:
            stored = service.read_in(session, resource_type=resource["resourceType"], resource_id=resource["id"])
            assert stored.version_id == 1
        plan = service.read_in(session, resource_type="CarePlan", resource_id="demo-care-plan").content
    # the demo plan is a coordinated care plan whose activities are catalogue practices
    assert plan["meta"]["profile"] == [f"{BASE}/StructureDefinition/coordinated-care-plan"]
    assert all(a["detail"]["instantiatesCanonical"][0].startswith(catalogue.PRACTICE_URL_PREFIX)
               for a in plan["activity"])


def test_with_tier_replaces_the_tier_its_source_and_date_and_keeps_the_rest():
    notify = next(p for p in PRACTICES if p["id"] == "notify-community-providers-of-admission")
    assert catalogue.reassessment_of(notify) == "2017-09"
    changed = catalogue.with_tier(notify, tier="recommended", provenance="programme-assessed: recommended",
                                  reassessment="2027-09-01")
    assert tier_of(changed) == "recommended" and tier_of(notify) == "promising"  # a copy
    assert catalogue.tier_provenance_of(changed) == "programme-assessed: recommended"
    assert catalogue.reassessment_of(changed) == "2027-09-01"
    assert catalogue.themes_of(changed) == catalogue.themes_of(notify)
    assert catalogue.endorsement_of(changed) == catalogue.endorsement_of(notify)
    assert catalogue.follow_up_cadence(changed) == catalogue.follow_up_cadence(notify)
    assert len(changed["extension"]) == len(notify["extension"])
    cleared = catalogue.with_tier(changed, tier="recommended", provenance="x", reassessment=None)
    assert catalogue.reassessment_of(cleared) is None and len(cleared["extension"]) == len(notify["extension"]) - 1
    validate_resource(cleared)


def test_choose_practices_filters_by_theme_tier_need_category_and_text(database):
    load_catalogue(database)
    with database.reading() as session:
        every = catalogue.choose_practices(session)
        assert [p["id"] for p in every] == [p["id"] for p in catalogue.list_practices(session)]
        assert [p["id"] for p in catalogue.choose_practices(session, need="food-insecurity")] == [
            "screen-for-social-needs"]
        assert [p["id"] for p in catalogue.choose_practices(session, category="peer-support", tier="emerging",
                                                            theme="trust-relationships", text="LIVED")] == [
            "peer-support"]
        assert catalogue.choose_practices(session, category="peer-support", tier="promising") == []
        assert catalogue.choose_practices(session, text="no practice says this") == []
