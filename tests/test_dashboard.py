"""The supervisor dashboard in headless Chromium, against the real API on uvicorn with a
real SQLite ledger and telemetry store (the world of :mod:`tests.apiworld`, plus readings
of the last hours so the default chart range has something to draw).

Screenshots are kept in ``test-artifacts/dashboard/`` at the repository root.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openpyxl  # type: ignore[import-untyped]
import pytest
from fastapi import FastAPI
from PIL import Image, ImageChops
from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

from cloud_api.app import create_app
from cloud_api.config import ApiConfig
from contracts import StatusBody, TemperatureBody, make_envelope
from gateway.coldchain.config import ColdChainConfig, ProbeAssignment
from gateway.convert import to_points
from tests.apiworld import NAME, NUMBER, PASSWORD, WAYBILL, World, serve, world_at

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "dashboard"
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
MEDBOX = "village-23-medbox"
REPORT_PATH = "/api/v1/reports/compliance"


# -- the world and the server ------------------------------------------------------------


def medicine(seq: int) -> float:
    return 9.0 if seq >= 33 else 4.0 + (seq % 6) * 0.5


def recent_readings(now: datetime) -> list[Any]:
    """Six hours of the medicine probe every 10 minutes, above its 8 °C limit for the
    last half hour, and both village devices online."""
    envelopes = [
        make_envelope(
            station="village-23", device=MEDBOX, boot=2, seq=seq,
            ts=now - timedelta(minutes=10 * (36 - seq)),
            body=TemperatureBody(probe="medicine", celsius=medicine(seq), humidity=55.0),
        )
        for seq in range(36)
    ]  # fmt: skip
    envelopes += [
        make_envelope(
            station="village-23", device=device, boot=2, seq=100, ts=now - timedelta(minutes=1),
            body=StatusBody(state="online", boot=2, version="test"),
        )
        for device in (MEDBOX, "village-23-locker")
    ]  # fmt: skip
    return envelopes


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with world_at(f"sqlite:///{tmp_path / 'ledger.sqlite'}", tmp_path) as built:
        now = datetime.now(UTC)
        built.store.write([point for e in recent_readings(now) for point in to_points(e)])
        yield built


def dashboard_app(world: World) -> FastAPI:
    coldchain = ColdChainConfig(
        probes=[
            ProbeAssignment(station="village-23", device=MEDBOX, probe="medicine", profile="pharma")
        ]
    )
    return create_app(
        ApiConfig(coldchain=coldchain),
        world.store,
        ledger=world.ledger,
        keyring=world.keyring,
        poll_s=0.05,
    )


@pytest.fixture
def app(world: World) -> FastAPI:
    return dashboard_app(world)


@pytest.fixture
def base(app: FastAPI) -> Iterator[str]:
    """The real app on uvicorn on a free loopback port (ready once uvicorn has started)."""
    with serve(app) as url:
        yield url


# -- the browser -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():  # make test installs it: its absence is a broken setup
        pytest.fail("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
    expect.set_options(timeout=15_000)  # two shared cores: waits are for state, not speed
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        launched.close()


class Pages:
    """Opens browser pages and checks, when the test ends, that none of them asked
    anything of another origin and none raised an uncaught script error."""

    def __init__(self, browser: Browser, base: str) -> None:
        self.browser = browser
        self.base = base
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.contexts: list[Any] = []

    def open(
        self,
        viewport: ViewportSize = DESKTOP,
        locale: str = "en-GB",
        **options: Any,
    ) -> Page:
        context = self.browser.new_context(
            viewport=viewport, locale=locale, timezone_id="Asia/Shanghai", **options
        )
        self.contexts.append(context)
        page = context.new_page()
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        return page

    def check(self) -> None:
        foreign = [url for url in self.requests if not url.startswith(self.base + "/")]
        assert not foreign, f"requests to other origins: {foreign}"
        assert not self.errors, f"script errors: {self.errors}"

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def pages(browser: Browser, base: str) -> Iterator[Pages]:
    opened = Pages(browser, base)
    try:
        yield opened
        opened.check()
    finally:
        opened.close()


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def log_in(page: Page, base: str, user: str = "sup", password: str = PASSWORD) -> None:
    page.goto(base + "/")
    submit_login(page, user, password)
    expect(page.locator(".station-row").first).to_be_visible()


def submit_login(page: Page, user: str, password: str) -> None:
    page.locator("#login-username").fill(user)
    page.locator("#login-password").fill(password)
    page.locator("#login-form button[type=submit]").click()


def wait_until_live(page: Page) -> None:
    """The event stream has sent ``hello``: the API has taken its baseline, so anything
    written to the ledger from now on reaches this page as an event."""
    expect(page.locator("#live")).to_have_attribute("data-state", "on")


# -- scenarios ---------------------------------------------------------------------------


def test_a_wrong_password_is_refused_and_the_right_one_shows_the_stations(
    pages: Pages, base: str
) -> None:
    page = pages.open()
    page.goto(base + "/")
    expect(page.locator("#login-form")).to_be_visible()
    submit_login(page, "sup", "not the password")
    expect(page.locator("#login-error")).to_have_text("Wrong user name or password.")
    expect(page.locator("#app-view")).to_be_hidden()
    screenshot(page, "login-refused")

    submit_login(page, "sup", PASSWORD)
    rows = page.locator(".station-row")
    # The supervisor's scope is division 411523: three of the four stations.
    expect(rows).to_have_count(3)
    village = page.locator('.station-row[data-station="village-23"]')
    expect(village.locator(".cell-online")).to_contain_text("2 / 2")
    expect(village.locator(".cell-alerts")).to_have_text("1")
    expect(page.locator("#alert-count")).to_have_text("1")
    expect(page.locator("#who")).to_have_text("sup · supervisor")
    [cookie] = [c for c in page.context.cookies() if c["name"] == "postedge_session"]
    assert cookie["httpOnly"]
    # At 1280×800 the navigation is a sidebar to the left of the content.
    nav = page.locator("#nav").bounding_box()
    content = page.locator("#content").bounding_box()
    assert nav is not None
    assert content is not None
    assert nav["x"] + nav["width"] <= content["x"]
    assert nav["height"] > 400
    screenshot(page, "stations-desktop")

    page.locator("#logout").click()
    expect(page.locator("#login-form")).to_be_visible()
    page.reload()
    expect(page.locator("#login-form")).to_be_visible()


def test_an_alert_arrives_live_and_acknowledging_it_is_written_to_the_ledger(
    pages: Pages, base: str, world: World
) -> None:
    page = pages.open()
    log_in(page, base)
    page.locator('#nav a[data-view="alerts"]').click()
    expect(page.locator(".alert-row")).to_have_count(1)
    wait_until_live(page)

    number = world.raise_alert("village-23", MEDBOX, at=datetime.now(UTC))
    row = page.locator(f'.alert-row[data-alert="{number}"]')
    expect(row).to_be_visible()
    expect(row).to_have_attribute("data-state", "open")
    expect(row).to_contain_text("Temperature too high")
    expect(
        page.locator(".toast", has_text="New alert: Temperature too high at 村服务点")
    ).to_be_visible()
    expect(page.locator("#alert-count")).to_have_text("2")  # the station event
    village = page.locator('.station-row[data-station="village-23"] .cell-alerts')
    expect(village).to_have_text("2")  # updated in place, though not on screen
    screenshot(page, "alert-live")

    row.locator(".act-acknowledge").click()
    expect(row).to_have_attribute("data-state", "acknowledged")
    expect(row.locator(".cell-state")).to_contain_text("by sup")
    expect(row.locator(".act-acknowledge")).to_have_count(0)
    with world.ledger.transaction(write=False) as tx:
        stored = tx.alert(number)
    assert stored is not None
    assert (stored.state, stored.acknowledged_by) == ("acknowledged", "sup")
    screenshot(page, "alert-acknowledged")


def test_an_auditor_sees_the_alerts_but_no_buttons_to_act_on_them(pages: Pages, base: str) -> None:
    page = pages.open()
    log_in(page, base, user="aud")
    page.locator('#nav a[data-view="alerts"]').click()
    expect(page.locator(".alert-row")).to_have_count(2)  # every station: two alerts
    expect(page.locator(".act-acknowledge, .act-resolve")).to_have_count(0)


def test_a_probe_chart_draws_the_readings_and_the_profile_limits(pages: Pages, base: str) -> None:
    page = pages.open()
    log_in(page, base)
    village = page.locator('.station-row[data-station="village-23"]')
    village.get_by_role("button", name="Show 2 devices").click()
    page.locator(".probe-link", has_text="medicine").click()

    chart = page.locator("svg.chart")
    expect(chart).to_be_visible()
    expect(page.locator(".chart-title")).to_have_text("村服务点 · village-23-medbox · medicine")
    line = chart.locator("path.series-line")
    d = line.get_attribute("d") or ""
    assert d.startswith("M"), d
    assert d.count("M") == 1, d  # 36 readings ten minutes apart: no gap
    assert d.count("L") == 35, d
    # The pharma profile: 2–8 °C, critical below 0 and above 12.
    for cls, value in [
        ("limit-low", "2"), ("limit-high", "8"),
        ("limit-critical-low", "0"), ("limit-critical-high", "12"),
    ]:  # fmt: skip
        expect(chart.locator(f"line.limit-line.{cls}")).to_have_attribute("data-value", value)
    expect(chart.locator("rect.limit-band")).to_have_count(1)
    expect(chart.locator("circle.series-out")).to_have_count(3)  # the three readings of 9 °C
    # The band lies between the low and high lines.
    band = chart.locator("rect.limit-band").bounding_box()
    high = chart.locator("line.limit-high").bounding_box()
    low = chart.locator("line.limit-low").bounding_box()
    assert band
    assert high
    assert low
    assert abs(band["y"] - high["y"]) < 2
    assert abs(band["y"] + band["height"] - low["y"]) < 2
    expect(page.locator(".pairs")).to_contain_text("pharma: 2 … 8 °C; critical 0 … 12 °C")

    box = chart.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] / 2)
    expect(chart.locator(".cursor-text")).to_contain_text("°C")
    screenshot(page, "chart")

    # A week is asked for downsampled (or, if the store cannot, raw and thinned here).
    page.locator("#chart-range").select_option("168")
    expect(page).to_have_url(re.compile(r".*hours=168.*"))
    expect(page.locator(".chart-box path.series-line")).to_have_attribute("d", re.compile("^M"))
    expect(page.locator(".chart-box line.limit-high")).to_have_attribute("data-value", "8")


def test_parcel_search_finds_a_waybill_and_its_trace_shows_masked_identity(
    pages: Pages, base: str
) -> None:
    page = pages.open()
    log_in(page, base)
    page.locator('#nav a[data-view="parcels"]').click()
    page.locator("#parcel-waybill").fill(WAYBILL[:4])
    page.locator("#parcel-form button[type=submit]").click()
    row = page.locator(f'tr[data-waybill="{WAYBILL}"]')
    expect(row).to_be_visible()
    expect(row).to_contain_text("县分拣中心")
    expect(row).to_contain_text("cleared")

    row.locator(".trace-link").click()
    trace = page.locator("article.trace")
    expect(trace.locator("h3")).to_have_text(f"Trace of {WAYBILL}")
    expect(trace.locator(".timeline li")).to_have_count(2)
    expect(trace.locator(".timeline li").nth(0)).to_contain_text("Accepted")
    expect(trace.locator(".timeline li").nth(1)).to_contain_text("X-ray PASS")
    expect(trace).to_contain_text("resident ID card")
    expect(trace).to_contain_text("138****5678")
    # Only the masked identity reaches the browser.
    assert NUMBER not in page.content()
    assert NAME not in page.content()
    screenshot(page, "parcel-trace")


def test_the_compliance_report_is_shown_and_downloads_as_csv_and_xlsx(
    pages: Pages, base: str, tmp_path: Path
) -> None:
    page = pages.open()
    log_in(page, base)
    page.locator('#nav a[data-view="reports"]').click()
    page.locator("#report-station").select_option("county-01")
    page.locator("#report-month").fill("2025-01")
    page.locator("#report-form button[type=submit]").click()
    expect(page.locator(".report .figure").first).to_be_visible()
    screenshot(page, "report")

    with page.expect_download() as csv_download:
        page.locator("#report-csv").click()
    csv = csv_download.value
    assert csv.suggested_filename == "postedge-compliance-county-01-2025-01.csv"
    text = Path(csv.path()).read_bytes().decode("utf-8-sig")
    assert "county-01" in text
    # The world's one parcel, accepted at county-01 in January 2025 with a real-name
    # record and an X-ray PASS: the coverage rows say so.
    assert "real-name records,1,1,1.0" in text
    assert "X-ray screened,1,1,1.0" in text

    with page.expect_download() as xlsx_download:
        page.locator("#report-xlsx").click()
    xlsx = xlsx_download.value
    assert xlsx.suggested_filename == "postedge-compliance-county-01-2025-01.xlsx"
    saved = tmp_path / xlsx.suggested_filename
    xlsx.save_as(saved)
    workbook = openpyxl.load_workbook(saved, read_only=True)
    try:
        cells = [c for sheet in workbook for row in sheet.iter_rows(values_only=True) for c in row]
    finally:
        workbook.close()
    assert "county-01" in cells
    assert "real-name records" in cells


def test_the_report_renders_fields_it_does_not_know_generically(pages: Pages, base: str) -> None:
    """Whatever fields the report grows, the page shows them: figures for plain values,
    tables for lists of objects, key/value lists for objects (the API's answer is
    replaced here, so the shape is fixed by the test and not by the report module)."""
    report = {
        "station": "county-01",
        "period": "2025-01",
        "realname_coverage": 0.975,
        "holds": 2,
        "exceptions_by_reason": {"no_realname": 3, "no_xray": 1},
        "cold_chain": [
            {"device": MEDBOX, "probe": "medicine", "minutes_out_of_range": 30, "mkt_c": 5.21},
            {"device": MEDBOX, "probe": "produce", "minutes_out_of_range": 0, "mkt_c": None},
        ],
        "a_field_added_later": {"nested": [{"point": "village-23", "deliveries": 41}]},
    }
    page = pages.open()
    page.route(
        re.compile(r".*/api/v1/reports/compliance\?.*format=json.*"),
        lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps(report)
        ),
    )
    log_in(page, base)
    page.goto(base + "/#/reports")
    page.locator("#report-station").select_option("county-01")
    page.locator("#report-form button[type=submit]").click()
    figure = page.locator('.figure[data-field="realname_coverage"]')
    expect(figure).to_contain_text("Real-name coverage")
    expect(figure).to_contain_text("97.5%")
    cold = page.locator('.report-section[data-field="cold_chain"]')
    expect(cold.locator("th")).to_have_text(
        ["Device", "Probe", "Minutes out of range", "Mean kinetic temperature"]
    )
    expect(cold.locator("tbody tr")).to_have_count(2)
    expect(cold.locator("tbody tr").first).to_contain_text("5.21 °C")
    reasons = page.locator('.report-section[data-field="exceptions_by_reason"]')
    expect(reasons).to_contain_text("no real-name record")  # a reason as a key
    later = page.locator('.report-section[data-field="a_field_added_later"]')
    expect(later.locator("h3")).to_have_text("A field added later")
    expect(later.locator("td")).to_have_text(["village-23", "41"])
    # The download links follow the form.
    href = page.locator("#report-xlsx").get_attribute("href") or ""
    assert href.startswith(REPORT_PATH + "?station=county-01&month=")
    assert "format=xlsx" in href
    screenshot(page, "report-generic")


def glyphs(page: Page) -> dict[str, Any]:
    """Two different Chinese characters drawn in the page's font: with a CJK font they
    differ; without one both are the same missing-glyph box (or nothing)."""
    result: dict[str, Any] = page.evaluate(
        """() => {
          const family = getComputedStyle(document.body).fontFamily;
          const draw = (text) => {
            const canvas = document.createElement("canvas");
            canvas.width = 48; canvas.height = 48;
            const g = canvas.getContext("2d");
            g.font = `36px ${family}`;
            g.fillText(text, 4, 40);
            const data = g.getImageData(0, 0, 48, 48).data;
            let inked = 0, sum = 0;
            for (let i = 3; i < data.length; i += 4) { if (data[i]) inked++; sum += data[i] * i; }
            return { inked, sum, width: g.measureText(text).width };
          };
          return { a: draw("站"), b: draw("点"), family };
        }"""
    )
    return result


def test_chinese_labels_render_and_the_language_choice_is_remembered(
    pages: Pages, base: str
) -> None:
    page = pages.open(locale="zh-CN")
    page.goto(base + "/")
    expect(page.locator("#login-form h1")).to_have_text("登录")  # navigator.language zh-CN
    log_in(page, base)
    station_link = page.locator('#nav a[data-view="stations"]')
    expect(station_link).to_have_text("站点")
    expect(page.locator("#who")).to_have_text("sup · 监管员")
    expect(page.locator('.station-row[data-station="village-23"]')).to_contain_text("村级")

    drawn = glyphs(page)
    assert drawn["a"]["inked"] > 50, drawn
    assert drawn["b"]["inked"] > 50, drawn
    assert drawn["a"]["sum"] != drawn["b"]["sum"], f"CJK glyphs are not drawn: {drawn}"
    assert drawn["a"]["width"] > 20, drawn
    shot = Image.open(io.BytesIO(station_link.screenshot())).convert("L")
    blank = Image.new("L", shot.size, shot.getpixel((0, 0)))
    assert ImageChops.difference(shot, blank).getbbox() is not None, "the label is blank"
    screenshot(page, "stations-zh")

    # Every label has both languages, and no element shows a raw key.
    missing = page.evaluate(
        """async () => {
          const { dictionaries } = await import("/static/i18n.js");
          const en = Object.keys(dictionaries.en), zh = Object.keys(dictionaries.zh);
          return [en.filter((k) => !zh.includes(k)), zh.filter((k) => !en.includes(k)),
                  [...document.querySelectorAll("[data-i18n]")]
                    .filter((e) => e.textContent === e.dataset.i18n).map((e) => e.dataset.i18n)];
        }"""
    )
    assert missing == [[], [], []]

    page.locator("#lang-toggle").click()
    expect(station_link).to_have_text("Stations")
    page.reload()
    expect(page.locator('#nav a[data-view="stations"]')).to_have_text("Stations")
    page.locator("#lang-toggle").click()
    page.reload()
    expect(page.locator('#nav a[data-view="stations"]')).to_have_text("站点")


def test_a_phone_gets_the_stacked_layout(pages: Pages, base: str) -> None:
    page = pages.open(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    log_in(page, base)
    nav = page.locator("#nav").bounding_box()
    content = page.locator("#content").bounding_box()
    assert nav is not None
    assert content is not None
    assert nav["y"] + nav["height"] <= content["y"] + 1, (nav, content)
    assert nav["width"] >= PHONE["width"] - 2
    assert content["width"] >= PHONE["width"] - 2
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    first_row = page.locator(".station-row").first
    assert first_row.evaluate("row => getComputedStyle(row).display") == "block"
    screenshot(page, "stations-phone")

    page.locator('#nav a[data-view="alerts"]').click()
    expect(page.locator(".alert-row")).to_have_count(1)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(page, "alerts-phone")


def test_an_ended_session_brings_back_the_login_form(pages: Pages, base: str) -> None:
    page = pages.open()
    log_in(page, base)
    page.context.clear_cookies()  # as if the session had expired
    page.locator('#nav a[data-view="alerts"]').click()
    expect(page.locator("#login-error")).to_have_text(
        "Your session has ended; please sign in again."
    )
    expect(page.locator("#app-view")).to_be_hidden()
    submit_login(page, "sup", PASSWORD)
    expect(page.locator(".alert-row")).to_have_count(1)  # back where the user was
