"""The /dashboard page as an HTTP client sees it: authentication, roles, every measure, CSP that still holds."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import datetime, timedelta, timezone
from html import unescape

import pytest

from careplan.measures import compute, strata
from careplan.models import utcnow
from careplan.reminders.models import Reminder


def week_starts(count: int = 12) -> list[datetime]:
    """Return midnight UTC of the Mondays of the last `count` weeks, oldest first (this week's last)."""
    today = utcnow().date()
    monday = today - timedelta(days=today.weekday())
    return [datetime.combine(monday - timedelta(weeks=n), datetime.min.time(), tzinfo=timezone.utc)
            for n in reversed(range(count))]


@pytest.fixture
def follow_ups(database):
    """Ten follow-ups due each of the last 12 weeks: 5 on time for 8 weeks, then 10 on time for 4 weeks."""
    now = utcnow()
    with database.writing() as session:
        for week, start in enumerate(week_starts()):
            # Tuesday noon, or just before now in the current week, never before the week starts.
            due = max(start + timedelta(minutes=5),
                      min(start + timedelta(days=1, hours=12), now - timedelta(minutes=1)))
            on_time = 5 if week < 8 else 10
            for n in range(10):
                done = due - timedelta(hours=1) if n < on_time else due + timedelta(days=1)
                session.add(Reminder(key=f"follow-up|CarePlan/d{week}|act-{n}|{due.date()}", kind="follow-up",
                                     source=f"CarePlan/d{week}#act-{n}", recipient="Practitioner/c1",
                                     patient=None, tier="recommended", due_at=due, done_at=done, state="sent",
                                     payload={}))
    return week_starts()


def page_text(response) -> str:
    """Return the page's visible text with tags removed and whitespace collapsed."""
    html = re.sub(r"<svg.*?</svg>", " ", response.get_data(as_text=True), flags=re.DOTALL)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def test_without_a_token_the_page_is_refused_with_a_bearer_challenge(anonymous_client):
    response = anonymous_client.get("/dashboard")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="careplan"')
    assert "<svg" not in response.get_data(as_text=True)


def test_a_partner_may_not_see_the_dashboard(app, token_for):
    client = app.test_client()
    # with the partner's usual scopes the scope check refuses first; with every scope the role check still does
    narrow = token_for(role="partner", organization="Organization/harbour-shelter",
                       scopes="system/Task.rus system/ServiceRequest.rs system/Patient.rs system/Communication.crs")
    assert client.get("/dashboard", headers={"Authorization": f"Bearer {narrow}"}).status_code == 403
    broad = token_for(role="partner", organization="Organization/harbour-shelter", scopes="system/*.cruds")
    response = client.get("/dashboard", headers={"Authorization": f"Bearer {broad}"})
    assert response.status_code == 403
    assert response.mimetype == "text/html"
    assert "for coordinators, programme leads and administrators" in page_text(response)
    assert "<svg" not in response.get_data(as_text=True)


def test_an_ehr_client_may_not_see_the_dashboard(app, token_for):
    token = token_for(role="ehr")
    assert app.test_client().get("/dashboard", headers={"Authorization": f"Bearer {token}"}).status_code == 403


def test_a_coordinator_sees_every_measure_with_its_chart_latest_value_and_signals(app, token_for, follow_ups):
    token = token_for(role="coordinator")
    response = app.test_client().get("/dashboard", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    text = page_text(response)
    measures = compute.list_measures()
    for definition in measures:
        assert definition.title in text
        assert f'id="measure-{definition.id}"' in html
    assert html.count("<svg") == len(measures)  # one inline chart per measure, nothing fetched
    assert "<script" not in html and "<img" not in html and "<link" not in html
    assert "Last 12 weeks" in text and "This measure could not be computed" not in text

    section = html[html.index('id="measure-follow-ups-on-time"'):]
    section = section[:section.index("</section>")]
    section_text = " ".join(unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<svg.*?</svg>", " ", section,
                                                                      flags=re.DOTALL))).split())
    # the latest week: 10 of 10 on time
    assert "Latest value 100.0%" in section_text
    assert "10 of 10" in section_text
    assert f"week of {follow_ups[-1].date().isoformat()}" in section_text
    # p̄ = (8·5 + 4·10) / 120 = 2/3: the first eight weeks at 50 % sit below it, which is bad news for this measure
    first, eighth = follow_ups[0].date().isoformat(), follow_ups[7].date().isoformat()
    assert (f"Shift: 8 consecutive points below the centre line (week of {first} to week of {eighth}) "
            "- a concern.") in section_text
    assert 'class="concern"' in section
    assert "Signal: Shift: 8+ points on one side of the centre line" in section  # the chart's legend
    assert 'id="m-follow-ups-on-time-signal-p-shift"' in section


def test_the_content_security_policy_stays_strict_and_allows_only_the_pages_stylesheet(client, follow_ups):
    response = client.get("/dashboard")
    assert response.status_code == 200
    policy = response.headers["Content-Security-Policy"]
    assert policy.startswith("default-src 'none';")
    assert "script-src" not in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    assert "form-action 'self'" in policy and "base-uri 'none'" in policy  # the selector form posts back here only
    html = response.get_data(as_text=True)
    [stylesheet] = re.findall(r"<style>(.*?)</style>", html, flags=re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(stylesheet.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in policy
    assert " style=" not in html  # inline style attributes would be blocked: the charts use presentation attributes
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_months_can_be_chosen_and_an_unknown_period_is_a_400(client):
    monthly = client.get("/dashboard?period=month")
    assert monthly.status_code == 200
    text = page_text(monthly)
    assert "Last 12 months" in text
    assert 'aria-current="page">Last 12 months' in monthly.get_data(as_text=True)
    assert 'href="?period=week"' in monthly.get_data(as_text=True)
    wrong = client.get("/dashboard?period=year")
    assert wrong.status_code == 400
    assert "period must be week or month" in page_text(wrong)


def test_the_dashboard_view_is_audited(client, database):
    from sqlalchemy import select

    from careplan.models import Resource

    assert client.get("/dashboard").status_code == 200
    with database.reading() as session:
        events = session.execute(select(Resource.content).where(Resource.res_type == "AuditEvent")).scalars().all()
    queries = [base64.b64decode(entity["query"]).decode() for event in events for entity in event.get("entity", [])
               if "query" in entity]
    assert "/dashboard" in queries
    assert any(event["subtype"][0]["code"] == "show" for event in events)


@pytest.fixture
def gendered_follow_ups(client, database):
    """This week: five women's follow-ups all on time, five men's all late (no cell of 1 to 4, so none hidden)."""
    from tests.factories import FHIR_JSON

    due = week_starts()[-1] + timedelta(minutes=5)
    with database.writing() as session:
        for n in range(10):
            on_time = n < 5
            session.add(Reminder(key=f"follow-up|CarePlan/g{n}|act-1|{due.date()}", kind="follow-up",
                                 source=f"CarePlan/g{n}#act-1", recipient="Practitioner/c1", patient=f"Patient/g{n}",
                                 tier="promising", due_at=due, state="sent", payload={},
                                 done_at=due - timedelta(minutes=1) if on_time else due + timedelta(days=1)))
    for n in range(10):
        patient = {"resourceType": "Patient", "id": f"g{n}", "gender": "female" if n < 5 else "male",
                   "birthDate": "1980-01-01"}
        assert client.put(f"/fhir/Patient/g{n}", json=patient, content_type=FHIR_JSON).status_code == 201


def legend_texts(section: str) -> list[str]:
    """Return the texts of a card's chart (matplotlib writes legend labels as <text> elements)."""
    svg = section[section.index("<svg"):section.index("</svg>")]
    return [unescape(t).strip() for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg)]


def card(html: str, measure_id: str) -> str:
    section = html[html.index(f'id="measure-{measure_id}"'):]
    return section[:section.index("</section>")]


def test_the_selector_is_a_plain_get_form_with_every_stratifier_and_both_periods(client):
    html = client.get("/dashboard").get_data(as_text=True)
    [form] = re.findall(r"<form\b.*?</form>", html, flags=re.DOTALL)
    assert 'method="get"' in form and "action=" not in form  # submits to this page
    assert "<script" not in html and " on" not in re.sub(r'"[^"]*"', '""', form)  # no script, no handlers
    assert re.findall(r'<select id="choose-period" name="period">', form)
    assert re.findall(r'<option value="(\w+)"', form.split('name="stratifier"')[0]) == ["week", "month"]
    stratifiers = re.findall(r'<option value="([\w-]*)"', form.split('name="stratifier"')[1])
    assert stratifiers == ["", *(s.id for s in strata.STRATIFIERS)]
    assert '<option value="" selected>Overall' in form


def test_choosing_a_stratifier_draws_every_applicable_chart_by_stratum(client, gendered_follow_ups):
    response = client.get("/dashboard?period=week&stratifier=gender")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert '<option value="gender" selected>' in html
    assert "by gender (administrative)" in page_text(response)
    section = card(html, "follow-ups-on-time")
    legend = legend_texts(section)
    assert "female" in legend and "male" in legend and "All" in legend  # one series per stratum, and the total
    assert "stratum cell(s) under 5 suppressed" not in " ".join(legend)  # both strata drawn, not gaps
    assert 'id="m-follow-ups-on-time-stratum-1"' in section and 'id="m-follow-ups-on-time-stratum-2"' in section
    assert "by gender" in " ".join(legend)
    for definition in compute.list_measures():  # every chart is drawn, stratified where the dimension applies
        section = card(html, definition.id)
        assert "<svg" in section
        assert "gender" in compute.stratifiers_for(definition)
        if definition.id != "follow-ups-on-time":  # no data: said in words rather than drawn as empty strata
            assert "No data to break down by gender (administrative) in these periods." in unescape(section)
    # the period links keep the stratifier
    assert 'href="?period=month&amp;stratifier=gender"' in html


def test_tier_applies_only_to_reminders_and_activities(client, gendered_follow_ups):
    html = client.get("/dashboard?stratifier=tier&period=month").get_data(as_text=True)
    assert "promising" in legend_texts(card(html, "follow-ups-on-time"))
    assert 'aria-current="page">Last 12 months' in html
    plans = card(html, "ccp-within-30-days")
    assert f"Not broken down by {strata_title('tier')}: it does not apply to this measure." in unescape(plans)
    assert "<svg" in plans


def strata_title(stratifier: str) -> str:
    return next(s.title for s in strata.STRATIFIERS if s.id == stratifier).lower()


def test_without_a_stratifier_no_chart_is_broken_down(client, gendered_follow_ups):
    html = client.get("/dashboard?stratifier=").get_data(as_text=True)
    assert "female" not in legend_texts(card(html, "follow-ups-on-time"))


def test_an_unknown_stratifier_is_a_400(client):
    response = client.get("/dashboard?stratifier=shoe-size")
    assert response.status_code == 400
    assert "stratifier must be one of age-band" in page_text(response)


def test_a_programme_lead_sees_the_dashboard_with_its_default_scopes(app, token_for, follow_ups):
    from careplan.auth.clients import DEFAULT_SCOPES

    token = token_for(role="lead", scopes=DEFAULT_SCOPES["lead"])
    response = app.test_client().get("/dashboard?stratifier=tier", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, page_text(response)[:300]
    html = response.get_data(as_text=True)
    assert html.count("<svg") == len(compute.list_measures())
    assert "Latest value 100.0%" in " ".join(unescape(re.sub(r"<[^>]+>", " ", re.sub(
        r"<svg.*?</svg>", " ", card(html, "follow-ups-on-time"), flags=re.DOTALL))).split())
