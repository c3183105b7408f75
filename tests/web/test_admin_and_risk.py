"""Administration pages (users and roles, the audit log viewer, models) and the risk panel
with a real trained model, over HTTP."""

from __future__ import annotations

import base64
import hashlib
import re

import httpx
import pytest
from starlette.applications import Starlette
from web_world import World, csrf, sign_in

from carebase.store.base import Store

pytestmark = pytest.mark.asyncio


async def test_admin_manages_users(web: httpx.AsyncClient, world: World) -> None:
    await sign_in(web, "admin")
    page = await web.get("/app/admin/users")
    assert page.status_code == 200
    assert re.search(r'<th scope="row">doc</th><td>Dr Doc</td><td>clinician</td>', page.text)
    token = csrf(page.text)
    added = await web.post(
        "/app/admin/users",
        data={
            "csrf_token": token,
            "action": "add",
            "username": "rita",
            "role": "researcher",
            "name": "Rita",
            "password": "a long enough passphrase",
        },
    )
    assert added.status_code == 303
    wrong = await web.post(
        "/app/admin/users",
        data={"csrf_token": token, "action": "add", "username": "x", "role": "wizard"},
    )
    assert wrong.status_code == 400 and "Role &#39;wizard&#39; is not known" in wrong.text
    disabled = await web.post(
        "/app/admin/users", data={"csrf_token": token, "action": "disable", "username": "doc"}
    )
    assert disabled.status_code == 303
    listed = (await web.get("/app/admin/users")).text
    assert re.search(r"<th scope=\"row\">doc</th>.*?<td>disabled</td>", listed, re.S)
    assert "rita" in listed
    async with httpx.AsyncClient(transport=web._transport, base_url="http://testserver") as c:
        from web_helpers import post_login

        refused = await post_login(c, "doc", "correct horse battery")
        assert refused.status_code in (401, 403)


async def test_audit_viewer_filters(
    web: httpx.AsyncClient, world: World, audited_app: Starlette
) -> None:
    await sign_in(web, "doc")
    await web.get(f"/app/patients/{world.first}")
    await sign_in(web, "admin")
    await web.get(f"/app/patients/{world.second}")
    audited_app.state.audit_trail.flush()
    by_patient = (await web.get("/app/admin/audit", params={"patient": world.second})).text
    rows = re.findall(
        r"<tr[^>]*><td>(\d+)</td><td>[^<]+</td><td>([^<]*)</td><td>([^<]*)</td>", by_patient
    )
    assert rows and all(
        world.second in row
        for row in re.findall(r"<tr[^>]*><td>\d+</td>.*?</tr>", by_patient, re.S)
    )
    by_user = (await web.get("/app/admin/audit", params={"agent": "doc", "action": "R"})).text
    whos = re.findall(r"<tr[^>]*><td>\d+</td><td>[^<]+</td><td>([^<]*)</td>", by_user)
    assert whos and set(whos) == {"doc"}
    failures = (await web.get("/app/admin/audit", params={"outcome": "4"})).text
    assert "No entries match." in failures or "<td>4</td>" in failures
    (await web.get("/app/admin/audit", params={"from": "2000-01-01", "to": "2999-12-31"}))
    assert (await web.get("/app/admin/audit", params={"from": "yesterday"})).status_code == 400


async def test_risk_panel_shows_predictions_with_factors_and_the_model_card(
    web: httpx.AsyncClient, world: World, store: Store
) -> None:
    if store.dialect != "sqlite":
        pytest.skip("the model is the same on both stores; trained once, tested on SQLite")
    from carebase.ml import registry
    from ml_serving_data import trained_model

    record = registry.register(store, trained_model())
    registry.promote(store, record.id)
    await sign_in(web, "doc")
    panel = await web.get(f"/app/patients/{world.first}/risk")
    assert panel.status_code == 200
    assert "predicted risk" in panel.text
    assert re.search(r'<svg class="factors"[^>]*role="img"', panel.text)
    assert re.search(r'<rect class="bar (raises|lowers)"', panel.text)
    assert f'href="/app/models/{record.id}/card"' in panel.text
    card = await web.get(f"/app/models/{record.id}/card")
    assert card.status_code == 200 and "readmission" in card.text.lower()
    _assert_card_style_allowed_by_hash_only(card)
    await sign_in(web, "admin")
    models = (await web.get("/app/admin/models")).text
    assert "readmission_30d" in models and f"/app/models/{record.id}/card" in models


def _assert_card_style_allowed_by_hash_only(card: httpx.Response) -> None:
    """The card's inline style is allowed by its hash; scripts stay 'self' only."""
    style = re.search(r"<style>(.*?)</style>", card.text, re.S)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    policy = card.headers["content-security-policy"]
    directives = {d.split()[0]: d.split()[1:] for d in policy.split("; ")}
    assert directives["style-src"] == ["'self'", f"'sha256-{digest}'"]
    assert directives["script-src"] == ["'self'"] and "unsafe-inline" not in policy
