"""The dashboard in headless Chromium (Debian's package) against a real server: visible, styled, no CSP violation."""

from __future__ import annotations

import io
import os
import shutil
import threading

import pytest
from PIL import Image
from werkzeug.serving import make_server

from careplan.measures import compute
from tests.api.test_dashboard import follow_ups  # noqa: F401 - the fixture: a follow-up measure with a signal
from tests.api.test_dashboard import gendered_follow_ups  # noqa: F401 - the fixture: two gender strata of five

CHROMIUM = os.environ.get("CAREPLAN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.slow


def _require_chromium() -> None:
    if os.path.exists(CHROMIUM):
        return
    message = f"Chromium not found at {CHROMIUM}: apt-get install -y chromium (or set CAREPLAN_CHROMIUM)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)  # CI must exercise the browser, never skip it
    pytest.skip(message)


@pytest.fixture
def server(app):
    """Serve the app on a free local port in a thread; yield its base URL."""
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, name="dashboard-test-server", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{http.server_port}"
    http.shutdown()
    thread.join(timeout=10)


def token_for_server(app, base_url: str, *, role: str) -> str:
    """Issue a real access token whose issuer and audience are the live server's URL (not the test client's)."""
    from api import auth as api_auth
    from careplan.auth import clients, tokens

    database = app.extensions["careplan.database"]
    registered = clients.register(database, name=f"browser {role}", role=role, organization=None,
                                  scopes="system/*.cruds", with_secret=False, client_id=f"browser-{role}")
    with app.test_request_context(base_url=base_url):
        settings = api_auth.token_settings()
    return tokens.issue_access_token(database, client=registered.client, scopes=registered.client.scopes,
                                     settings=settings).access_token


@pytest.fixture
def browser():
    """Launch Debian's Chromium headless through Playwright (no browser download)."""
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        yield chromium
        chromium.close()


def test_a_coordinator_sees_every_measure_in_chromium(app, server, browser, follow_ups, tmp_path):
    token = token_for_server(app, server, role="coordinator")
    context = browser.new_context(extra_http_headers={"Authorization": f"Bearer {token}"},
                                  viewport={"width": 1280, "height": 900})
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    response = page.goto(f"{server}/dashboard", wait_until="load")
    assert response is not None and response.status == 200

    measures = compute.list_measures()
    for definition in measures:
        heading = page.get_by_role("heading", name=definition.title, exact=True)
        heading.scroll_into_view_if_needed()
        assert heading.is_visible(), definition.title
        chart = page.locator(f"#measure-{definition.id} figure svg")
        assert chart.count() == 1
        box = chart.bounding_box()
        assert box is not None and box["width"] > 400 and box["height"] > 200  # drawn, not collapsed
    assert page.get_by_role("img", name=measures[0].title).count() == 1  # the chart's accessible name

    # The stylesheet allowed by hash applied (a blocked one would leave the header unstyled), and nothing was refused.
    assert page.eval_on_selector("header", "e => getComputedStyle(e).backgroundColor") == "rgb(31, 59, 92)"
    assert not [line for line in console if "Content Security Policy" in line or "pageerror" in line], console

    latest = page.locator("#measure-follow-ups-on-time .latest .value")
    assert latest.inner_text() == "100.0%"
    signal = page.locator("#measure-follow-ups-on-time li.concern").first
    assert signal.is_visible() and "Shift: 8 consecutive points below the centre line" in signal.inner_text()

    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    image = Image.open(io.BytesIO(data))
    assert image.size[0] == 1280 and image.size[1] > 900 * 2  # every measure's card, one under the other
    assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 200  # charts and text, not a blank page
    context.close()


def test_choosing_a_stratifier_in_chromium_redraws_the_charts_by_stratum(app, server, browser, gendered_follow_ups):
    token = token_for_server(app, server, role="coordinator")
    context = browser.new_context(extra_http_headers={"Authorization": f"Bearer {token}"},
                                  viewport={"width": 1280, "height": 900})
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    assert page.goto(f"{server}/dashboard", wait_until="load").status == 200
    legend = page.locator("#measure-follow-ups-on-time figure svg text")
    assert "female" not in legend.all_text_contents()

    page.get_by_role("combobox", name="Break down by").select_option("gender")
    page.get_by_role("combobox", name="Period", exact=True).select_option("month")
    with page.expect_navigation(wait_until="load"):
        page.get_by_role("button", name="Show").click()
    assert page.url.endswith("/dashboard?period=month&stratifier=gender")
    assert page.get_by_role("combobox", name="Break down by").input_value() == "gender"  # the page remembers the choice
    assert page.locator("nav strong[aria-current=page]").inner_text() == "Last 12 months"
    texts = [t.strip() for t in legend.all_text_contents()]
    assert "female" in texts and "male" in texts and "All" in texts, texts  # the chart legend names the strata
    assert page.locator("#measure-follow-ups-on-time svg [id$='stratum-1']").count() == 1
    assert page.locator("#measure-follow-ups-on-time svg [id$='stratum-2']").count() == 1
    # the form submitted under form-action 'self': no CSP report, no script anywhere
    assert not [line for line in console if "Content Security Policy" in line], console
    assert page.locator("script").count() == 0
    context.close()


def test_without_the_token_chromium_gets_the_401(server, browser):
    page = browser.new_page()
    response = page.goto(f"{server}/dashboard")
    assert response is not None and response.status == 401
    assert page.locator("svg").count() == 0
    page.close()
