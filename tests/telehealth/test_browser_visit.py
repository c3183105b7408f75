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


def _remote_ufrag(page: Any) -> str:
    return str(
        page.evaluate(
            "() => [...window.visitDebug.peers.values()][0].pc.remoteDescription.sdp"
            ".match(/a=ice-ufrag:(\\S+)/)[1]"
        )
    )


def _admitted_call(visit: Any, browser: Any) -> tuple[Any, Any, list[Any]]:
    """A clinician and an admitted patient, both decoding video: (clinician, patient, contexts)."""
    doc_grant, pat_grant = visit.join_grant("clinician"), visit.join_grant("patient")
    contexts = [browser.new_context(), browser.new_context()]
    clinician, patient = contexts[0].new_page(), contexts[1].new_page()
    patient.goto(visit.server.http + pat_grant["page"])
    clinician.goto(visit.server.http + doc_grant["page"])
    clinician.locator(f"button.admit[data-participant='{pat_grant['participant']}']").click(
        timeout=15_000
    )
    for page in (clinician, patient):
        page.wait_for_function(
            "() => Object.values(window.visitStats).some((s) => s.framesDecoded > 0)",
            timeout=30_000,
        )
    return clinician, patient, contexts


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_the_call_recovers_after_the_signalling_connection_drops(visit: Any, browser: Any) -> None:
    clinician, patient, contexts = _admitted_call(visit, browser)
    try:
        ufrag = _remote_ufrag(clinician)
        joins = visit.audit.interactions().count("telehealth-join")
        # the patient's network drops: its signalling socket closes under it
        patient.evaluate("() => window.visitDebug.socket().close()")
        patient.wait_for_function(
            "() => document.getElementById('status').textContent.startsWith('Connection lost')"
        )
        # it reconnects with the same token, resumes its participant, and restarts ICE
        patient.wait_for_function("() => window.visitDebug.restarts === 1", timeout=15_000)
        patient.wait_for_function(
            "() => document.getElementById('status').textContent === 'In the visit'"
        )
        clinician.wait_for_function(
            "(old) => [...window.visitDebug.peers.values()][0].pc.remoteDescription.sdp"
            ".match(/a=ice-ufrag:(\\S+)/)[1] !== old",
            arg=ufrag,
            timeout=15_000,
        )
        assert _remote_ufrag(clinician) != ufrag  # renegotiated over the new socket
        assert visit.audit.interactions().count("telehealth-join") == joins + 1
        for page in (clinician, patient):
            page.wait_for_function(
                "() => [...window.visitDebug.peers.values()][0].pc.connectionState === 'connected'",
                timeout=20_000,
            )
            before = _frames(page)
            page.wait_for_function(f"() => ({TOTAL_FRAMES}) > {before} + 10", timeout=20_000)
        # one participant each: the reconnect resumed, it did not add a second patient
        assert (
            clinician.locator("#remotes .tile").count()
            == patient.locator("#remotes .tile").count()
            == 1
        )
    finally:
        for context in contexts:
            context.close()
