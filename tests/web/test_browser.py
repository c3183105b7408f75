"""The web app in a real browser: Playwright driving the system Chromium (/usr/bin/chromium,
never a downloaded browser), one browser for the module.

A clinician signs in with the second factor, finds a patient as they type, opens the chart,
records vital signs and sees them in the trend chart, writes a note, prescribes and signs
out; a patient signs in to the portal and cannot reach another patient's pages. axe-core
(vendored, tests/web/vendor) audits the main pages for accessibility; the chart must not
scroll sideways on a phone. With CAREBASE_SCREENSHOTS=DIR, screenshots of the main pages
are saved there (docs/screenshots in the repository).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_server import running_server
from web_helpers import PASSWORD
from web_world import World

from carebase.auth import totp
from carebase.auth.users import UserDirectory

CHROMIUM = Path(os.environ.get("CAREBASE_CHROMIUM", "/usr/bin/chromium"))
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
SHOTS = os.environ.get("CAREBASE_SCREENSHOTS")

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None  # type: ignore[assignment]

if sync_playwright is None or not CHROMIUM.exists():
    reason = f"Playwright ({sync_playwright is not None}) and Chromium at {CHROMIUM} are needed"
    if os.environ.get("CI"):  # CI installs both (.ci/run): missing is a failure there
        raise RuntimeError(reason)
    pytest.skip(reason, allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, World, UserDirectory]]:
    from carebase.auth.keys import KeyRing

    keys = tmp_path_factory.mktemp("keys") / "keys"
    KeyRing.open(keys)
    with running_server(tmp_path_factory.mktemp("browser"), keys) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert sync_playwright is not None
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            # fake camera and microphone for the video visit page
            args=[
                "--no-sandbox",
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
            ],
        )
        yield launched
        launched.close()


def _axe(page: Page) -> list[dict[str, Any]]:
    """The accessibility violations axe-core finds on the page (WCAG 2.1 A and AA)."""
    # evaluated through the DevTools protocol: the page's CSP (rightly) refuses to let a
    # script tag inject it, and the tests must not weaken the CSP they run under
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text(encoding="utf-8") + "\n;undefined")
    result: dict[str, Any] = page.evaluate(
        "async () => await axe.run(document, {runOnly: {type: 'tag', values: "
        "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})"
    )
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:3]}
        for v in result["violations"]
    ]


def _csp_violations(page: Page) -> list[str]:
    """The Content-Security-Policy complaints the page logs (filled in as it runs)."""
    found: list[str] = []
    page.on(
        "console", lambda m: found.append(m.text) if "Content Security Policy" in m.text else None
    )
    return found


def _shot(page: Page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def _sign_in(page: Page, base: str, username: str, code: str | None = None) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    if code is not None:
        expect(page.get_by_role("heading", name="Enter your code")).to_be_visible()
        page.get_by_role("textbox", name="Code").fill(code)
        page.get_by_role("button", name="Continue").click()


def test_clinician_documents_a_visit(
    browser: Browser, server: tuple[str, World, UserDirectory]
) -> None:
    base, world, users = server
    enrollment = users.enroll_totp("doc", activate=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    violations = _csp_violations(page)
    page.goto(f"{base}/login")
    assert _axe(page) == []
    _shot(page, "login")
    _sign_in(page, base, "doc", totp.code_at(enrollment.secret, totp.current_step()))
    expect(page).to_have_url(f"{base}/app")
    family = world.first_name.split()[-1]
    page.get_by_label("Name, MRN or birth date (YYYY-MM-DD)").press_sequentially(family[:4])
    result = page.locator("#results").get_by_role("link", name=world.first_name)
    expect(result).to_be_visible()  # fetched as the user typed: no submit
    assert page.url == f"{base}/app"
    assert _axe(page) == []
    _shot(page, "search")
    result.click()
    expect(page.get_by_role("heading", name=world.first_name, level=1)).to_be_visible()
    assert _axe(page) == []

    page.get_by_role("link", name="Record vital signs").click()
    page.get_by_label("Systolic blood pressure (mmHg)").fill("400")
    page.get_by_label("Diastolic blood pressure (mmHg)").fill("90")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("400 mmHg is not plausible (expected 40-300)")).to_be_visible()
    assert _axe(page) == []
    _shot(page, "vitals-form-error")
    page.get_by_label("Systolic blood pressure (mmHg)").fill("163")
    page.get_by_label("Heart rate (/min)").fill("88")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", name=world.first_name, level=1)).to_be_visible()
    bp_chart = page.locator("svg#trend-bp")
    expect(bp_chart).to_be_visible()
    assert "Systolic blood pressure 163 mmHg" in bp_chart.inner_html()
    assert "Diastolic blood pressure 90 mmHg" in bp_chart.inner_html()

    page.get_by_role("link", name="Write a SOAP note").click()
    page.get_by_label("Subjective").fill("Headaches for a week.")
    page.get_by_label("Plan").fill("Recheck blood pressure in 2 weeks.")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Headaches for a week.")).to_be_visible()

    page.get_by_role("link", name="Prescribe a medication").click()
    page.get_by_role("textbox", name="Medication").fill("Amlodipine 5 MG Oral Tablet")
    page.get_by_role("textbox", name="Dosage instructions").fill("1 tablet daily")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#prescribe").get_by_text("1 tablet daily")).to_be_visible()

    page.get_by_role("link", name="Add a problem").click()
    page.get_by_label("Search ICD-10-CM by name or code").press_sequentially("essential hyper")
    page.get_by_role("button", name="I10").click()
    expect(page.get_by_label("ICD-10-CM code")).to_have_value("I10")
    assert _axe(page) == []
    page.get_by_role("button", name="Save").click()
    resolve = page.get_by_role("button", name="Resolve Essential (primary) hypertension")
    expect(resolve).to_be_visible()
    assert _axe(page) == []
    _shot(page, "chart")

    phone = browser.new_context(
        viewport={"width": 375, "height": 740}, storage_state=context.storage_state()
    )
    small = phone.new_page()
    small.goto(page.url)
    overflow = small.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"the chart scrolls sideways on a phone by {overflow}px"
    _shot(small, "chart-phone")
    phone.close()

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto(f"{base}/app/patients/{world.first}")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    assert violations == []
    context.close()


def test_patient_portal_is_the_patients_own(
    browser: Browser, server: tuple[str, World, UserDirectory]
) -> None:
    base, world, _ = server
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    page = context.new_page()
    page.goto(f"{base}/login")
    expect(page.locator("html")).to_have_attribute("lang", "zh-Hans")
    page.get_by_label("语言").select_option("en")
    page.get_by_role("button", name="切换").click()
    _sign_in(page, base, "pat")
    expect(page).to_have_url(f"{base}/portal")
    expect(page.get_by_role("heading", level=1)).to_contain_text(world.first_name)
    assert _axe(page) == []
    _shot(page, "portal")
    page.get_by_role("link", name="Lab results").click()
    expect(page.get_by_text("Average blood sugar over 3 months (HbA1c)").first).to_be_visible()
    assert _axe(page) == []
    _shot(page, "portal-labs")
    for path in (
        f"/app/patients/{world.second}",
        f"/app/patients/{world.second}/vitals",
        f"/portal?patient={world.second}",
    ):
        page.goto(f"{base}{path}")
        assert world.second_name not in page.content()
    page.goto(f"{base}/app/patients/{world.second}")
    expect(page.get_by_role("alert")).to_contain_text("This page is not for your role")
    page.get_by_label("Language").select_option("zh")
    page.get_by_role("button", name="Change").click()
    page.goto(f"{base}/portal")
    expect(page.get_by_role("link", name="化验结果")).to_be_visible()
    assert _axe(page) == []
    _shot(page, "portal-zh")
    context.close()


def test_staff_pages_pass_the_accessibility_audit(
    browser: Browser, server: tuple[str, World, UserDirectory]
) -> None:
    base, world, _ = server
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    violations = _csp_violations(page)
    _sign_in(page, base, "admin")
    for path in (
        "/app/admin/users",
        "/app/admin/audit?action=R",
        "/app/admin/models",
        "/app/patients/new",
        f"/app/patients/{world.second}/encounters",
        f"/app/patients/{world.second}/order",
    ):
        page.goto(f"{base}{path}")
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        assert _axe(page) == [], path
    page.goto(f"{base}/app/admin/audit")
    _shot(page, "audit-log")
    page.goto(f"{base}/app/patients/new")
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_text("This field is required").first).to_be_visible()
    assert _axe(page) == []
    assert violations == []
    context.close()


def test_visit_note_is_written_while_the_video_goes_on(
    browser: Browser, server: tuple[str, World, UserDirectory]
) -> None:
    """The chart visit page: the clinician joins from the chart, the panel connects, and the
    note posts in the background (the page, and so the call, stays)."""
    from datetime import UTC, datetime, timedelta

    from carebase.telehealth.codes import visit_coding
    from carebase.telehealth.encounter import visit_started

    base, world, users = server
    store = users.store
    start = datetime.now(UTC) + timedelta(minutes=30)
    with store.transaction() as tx:
        tx.create("Practitioner", {"resourceType": "Practitioner"}, "vdoc")
        appointment = tx.create(
            "Appointment",
            {
                "resourceType": "Appointment",
                "status": "booked",
                "serviceType": [visit_coding("virtual")],
                "description": "Video follow-up",
                "start": start.isoformat(timespec="seconds"),
                "end": (start + timedelta(minutes=20)).isoformat(timespec="seconds"),
                "participant": [
                    {"actor": {"reference": f"Patient/{world.first}"}, "status": "accepted"},
                    {"actor": {"reference": "Practitioner/vdoc"}, "status": "accepted"},
                ],
            },
        ).id
    users.add("vdoc", "clinician", PASSWORD, practitioner="vdoc", organization=world.organization)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    violations = _csp_violations(page)
    _sign_in(page, base, "vdoc")
    expect(page.get_by_role("heading", name="Your appointments")).to_be_visible()
    page.goto(f"{base}/app/patients/{world.first}")
    page.get_by_role("button", name="Join visit").click()
    expect(page).to_have_url(re.compile(rf"/visits/{appointment}#room={appointment}&token="))
    status = page.locator("#status")
    expect(status).not_to_have_text("Connecting…", timeout=10_000)
    expect(status).not_to_have_text("This link has no room or join token.")
    page.evaluate("window.stayed = true")
    note = page.locator("#visit-note")
    note.get_by_label("Subjective").fill("Rash on both forearms for 2 days")
    note.get_by_role("button", name="Save").click()
    expect(page.get_by_text("The visit has not started")).to_be_visible()
    visit_started(store, appointment, ["Practitioner/vdoc"])  # the patient came in
    note = page.locator("#visit-note")
    note.get_by_label("Subjective").fill("Rash on both forearms for 2 days")
    note.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Saved in this visit's encounter.")).to_be_visible()
    assert page.evaluate("window.stayed") is True  # no navigation: the call went on
    assert "#room=" in page.url
    assert _axe(page) == []
    _shot(page, "chart-visit")
    assert violations == []
    context.close()
