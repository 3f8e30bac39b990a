"""The synthetic demo data of `careplan seed`: loaded once, through the store's rules, feeding every screen."""

from __future__ import annotations

import json
from datetime import timedelta

from click.testing import CliRunner
from sqlalchemy import func, select

from careplan import demo, seeding
from careplan.cli import main
from careplan.config import PROJECT_ROOT
from careplan.measures import compute
from careplan.models import Resource, ResourceVersion, utcnow
from careplan.practices import profiles
from careplan.referrals import workflow
from careplan.reminders.models import Reminder
from careplan.validation import validate_resource
from tests.conftest import issue_test_token


def _counts(database) -> tuple[int, int, int]:
    with database.reading() as session:
        return (session.scalar(select(func.count()).select_from(Resource)),
                session.scalar(select(func.count()).select_from(ResourceVersion)),
                session.scalar(select(func.count()).select_from(Reminder)))


def test_seed_loads_the_demo_data_once_and_the_demo_sign_ins(database, database_url, tmp_path):
    env = {"CAREPLAN_DATABASE_URL": database_url, "CAREPLAN_INSTANCE_DIR": str(tmp_path)}
    runner = CliRunner()
    first = runner.invoke(main, ["seed"], env=env)
    assert first.exit_code == 0, first.output
    assert f"demo data: {demo.PATIENTS} synthetic patients" in first.output
    after_first = _counts(database)
    second = runner.invoke(main, ["seed"], env=env)
    assert second.exit_code == 0, second.output
    assert "0 created, 0 updated" in second.output and "demo data: already loaded, nothing added" in second.output
    assert _counts(database) == after_first
    with database.reading() as session:
        patients = session.scalar(select(func.count()).select_from(Resource).where(
            Resource.res_type == "Patient", Resource.res_id.like("demo-p0%")))
        tasks = session.scalar(select(func.count()).select_from(Resource).where(Resource.res_type == "Task"))
        plan_version = session.scalar(select(Resource.version_id).where(Resource.res_id == "demo-care-plan"))
    assert patients == demo.PATIENTS and tasks >= 50
    assert plan_version == 1  # the seeded example plan is not the demo's to change
    saved = json.loads((tmp_path / "demo-credentials.json").read_text())
    assert saved["client_id"] == "demo-admin"
    assert [(c["client_id"], c["role"]) for c in saved["more_clients"]] == [
        ("demo-coordinator", "coordinator"), ("demo-partner", "partner")]
    assert f"client_secret={saved['more_clients'][1]['client_secret']}" in second.output
    assert "kept" in second.output and "rotated" not in second.output


def test_seed_without_demo_data_loads_only_the_shipped_resources(database, database_url, tmp_path):
    env = {"CAREPLAN_DATABASE_URL": database_url, "CAREPLAN_INSTANCE_DIR": str(tmp_path)}
    result = CliRunner().invoke(main, ["seed", "--no-demo-data", "--no-demo-client"], env=env)
    assert result.exit_code == 0, result.output
    assert "demo data" not in result.output
    assert not demo.is_loaded(database)
    with database.reading() as session:
        assert session.scalar(select(func.count()).select_from(Resource).where(
            Resource.res_type == "Task")) == 0


def test_demo_data_keeps_the_store_rules_and_feeds_measures_worklist_and_inboxes(app, database, token_for):
    seeding.load(database, PROJECT_ROOT / "fhir")
    loaded = demo.load(database)
    assert loaded.loaded and loaded.referrals >= 50 and loaded.versions > loaded.resources
    assert not demo.load(database).loaded

    # every measure has a period with people in it (a denominator that is not suppressed)
    today = utcnow().date()
    for measure in compute.list_measures():
        result = compute.evaluate(database, measure_id=measure.id, period="month",
                                  start=today - timedelta(weeks=demo.WEEKS), end=today)
        assert any(p.denominator for p in result.points), measure.id

    # what is stored keeps the rules: valid FHIR, the care plan profile, legal referral histories, back-dated times
    with database.reading() as session:
        current = list(session.execute(select(Resource.res_type, Resource.res_id, Resource.content).where(
            Resource.deleted.is_(False))))
        versions = list(session.execute(select(ResourceVersion.res_type, ResourceVersion.res_id,
                                               ResourceVersion.last_updated, ResourceVersion.content)
                                        .order_by(ResourceVersion.res_type, ResourceVersion.res_id,
                                                  ResourceVersion.version_id)))
    for res_type, res_id, content in current:
        validate_resource(content, expected_type=res_type)
        if res_type == "CarePlan" and content.get("status") == "active":
            assert not profiles.structure_issues(content), res_id
    histories: dict[str, list[str]] = {}
    for res_type, res_id, last_updated, content in versions:
        if res_type == "Task" and workflow.is_referral(content):
            histories.setdefault(res_id, []).append(content["status"])
    assert len(histories) >= 50
    for task_id, statuses in histories.items():
        for before, after in zip([None, *statuses], statuses):
            assert after in workflow.ALLOWED[before], (task_id, statuses)
    oldest = min(last_updated for _, res_id, last_updated, _ in versions if res_id.startswith("demo-p"))
    assert oldest.date() <= today - timedelta(weeks=demo.WEEKS - 2)
    assert {s for statuses in histories.values() for s in statuses} >= {
        "requested", "accepted", "in-progress", "completed", "rejected"}

    # the demo coordinator's worklist and inbox, and the demo partner's new referrals
    coordinator = issue_test_token(app, role="coordinator", client_id="demo-coordinator")
    client = app.test_client()
    worklist = client.get("/api/v1/worklist", headers={"Authorization": f"Bearer {coordinator}"})
    assert worklist.status_code == 200, worklist.get_json()
    kinds = {item["kind"] for group in worklist.get_json()["groups"] for item in group["items"]}
    assert {"follow-up", "referral"} <= kinds
    inbox = client.get("/api/v1/inbox", headers={"Authorization": f"Bearer {coordinator}"})
    assert inbox.status_code == 200 and inbox.get_json()["items"]
    partner = token_for(role="partner", organization="Organization/demo-housing-first",
                        scopes="system/Task.rus system/ServiceRequest.rs system/Patient.rs "
                               "system/Communication.crus")
    referrals = client.get("/api/v1/partner/referrals", headers={"Authorization": f"Bearer {partner}"})
    assert referrals.status_code == 200, referrals.get_json()
    assert referrals.get_json()["counts"]["new"] >= 1
    directory = client.get("/api/v1/partners?need=housing&language=fr",
                           headers={"Authorization": f"Bearer {coordinator}"})
    assert directory.status_code == 200 and directory.get_json()["items"]
