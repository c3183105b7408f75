"""The browser visit page in two Chromium contexts with fake camera and microphone: the
patient waits, the clinician admits, and both decode video frames from the other
(`framesDecoded > 0` from getStats); mute, camera off and chat work on the page."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is a test extra")

CHROMIUM = (
    os.environ.get("CAREBASE_CHROMIUM")
    or shutil.which("chromium")
    or shutil.which("chromium-browser")
)
FAKE_MEDIA = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--auto-select-desktop-capture-source=Entire screen",  # screen share without a picker
]


@pytest.fixture(scope="module")
def browser() -> Any:
    if CHROMIUM is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set CAREBASE_CHROMIUM)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FAKE_MEDIA, headless=True)
        yield browser
        browser.close()


TOTAL_FRAMES = "Object.values(window.visitStats).reduce((n, s) => n + s.framesDecoded, 0)"


def _frames(page: Any) -> int:
    return int(page.evaluate(f"() => {TOTAL_FRAMES}"))


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_patient_waits_clinician_admits_both_see_video(visit: Any, browser: Any) -> None:
    doc_grant, pat_grant = visit.join_grant("clinician"), visit.join_grant("patient")
    doc_ctx, pat_ctx = browser.new_context(), browser.new_context()
    try:
        patient = pat_ctx.new_page()
        patient.goto(visit.server.http + pat_grant["page"])
        patient.wait_for_function(
            "() => document.getElementById('status').textContent.startsWith('Waiting')"
        )
        clinician = doc_ctx.new_page()
        clinician.goto(visit.server.http + doc_grant["page"])
        admit = clinician.locator(f"button.admit[data-participant='{pat_grant['participant']}']")
        admit.wait_for(timeout=15_000)
        assert patient.locator("#status").text_content().startswith("Waiting")
        admit.click()
        patient.wait_for_function(
            "() => document.getElementById('status').textContent === 'In the visit'"
        )
        for page in (clinician, patient):
            page.wait_for_function(
                "() => Object.values(window.visitStats).some((s) => s.framesDecoded > 0)",
                timeout=30_000,
            )
        assert _frames(clinician) > 0 and _frames(patient) > 0
        patient.click("#mute")
        assert (
            patient.evaluate(
                "() => document.getElementById('local').srcObject.getAudioTracks()[0].enabled"
            )
            is False
        )
        patient.click("#camera")
        assert (
            patient.evaluate(
                "() => document.getElementById('local').srcObject.getVideoTracks()[0].enabled"
            )
            is False
        )
        patient.fill("#chat-text", "hello from the browser")
        patient.click("#chat-form button")
        clinician.wait_for_function(
            "() => document.getElementById('chat-log').textContent"
            ".includes('hello from the browser')"
        )
        # screen share: the same sender now carries the screen, and frames keep arriving
        patient.click("#share")
        patient.wait_for_function(
            "() => document.getElementById('share').getAttribute('aria-pressed') === 'true'"
        )
        before = _frames(clinician)
        clinician.wait_for_function(f"() => ({TOTAL_FRAMES}) > {before}")
        quality = clinician.locator(".tile .quality").first.text_content()
        assert quality in ("good", "fair", "poor")
    finally:
        doc_ctx.close()
        pat_ctx.close()
