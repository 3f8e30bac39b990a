"""The /dashboard page as an HTTP client sees it: authentication, roles, every measure, CSP that still holds."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import datetime, timedelta, timezone
from html import unescape

import pytest

from careplan.measures import compute
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
    assert "for coordinators and administrators" in page_text(response)
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
