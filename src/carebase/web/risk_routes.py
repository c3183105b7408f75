"""The risk panel of a chart (`/app/patients/{id}/risk`) and the model cards and list.

The panel runs every active model on the patient's record as the user may read it (the
same `read_compartment` and `ml.serving.predict` as `Patient/$predict`), and shows each
prediction with its top factors as bars (SVG: length is the contribution, left lowers,
right raises) and a link to the model's card. The card is served to signed-in staff at
`/app/models/{id}/card` (the API serves the same card at `/ml/models/{id}/card` to bearer
tokens).
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup, escape
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from carebase.api.ml_routes import card_headers, read_compartment
from carebase.errors import NotFound
from carebase.web.pages import CLINICIAN_PREFIX as APP
from carebase.web.pages import WebPage, page, require
from carebase.web.patient_search import summary

TOP_FACTORS = 6
_BAR_W, _ROW_H, _LABEL_W = 520, 26, 230


def factor_bars(factors: list[tuple[str, str, float]], chart_id: str, title: str) -> Markup:
    """Horizontal bars of (feature, value, contribution), centred on zero."""
    if not factors:
        return Markup("")
    biggest = max(abs(c) for _, _, c in factors) or 1.0
    half = (_BAR_W - _LABEL_W) / 2
    middle = _LABEL_W + half
    height = _ROW_H * len(factors) + 8
    out = [
        f'<svg class="factors" viewBox="0 0 {_BAR_W} {height}" role="img" '
        f'aria-labelledby="{chart_id}-t" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{chart_id}-t">{escape(title)}</title>'
    ]
    for row, (feature, value, contribution) in enumerate(factors):
        y = 4 + row * _ROW_H
        length = abs(contribution) / biggest * (half - 6)
        x = middle if contribution >= 0 else middle - length
        kind = "raises" if contribution >= 0 else "lowers"
        out.append(
            f'<text class="tick" x="{_LABEL_W - 8}" y="{y + 16}" text-anchor="end">'
            f"{escape(feature)} = {escape(value)}</text>"
            f'<rect class="bar {kind}" x="{x:.1f}" y="{y + 4}" width="{max(length, 1):.1f}" '
            f'height="{_ROW_H - 10}"><title>{escape(feature)}: {contribution:+.3g}</title></rect>'
        )
    out.append(f'<line class="axis" x1="{middle}" y1="0" x2="{middle}" y2="{height}"/></svg>')
    return Markup("".join(out))


def predictions(web: WebPage, patient_id: str) -> list[dict[str, Any]]:
    """Every active model's prediction for the patient (blocking)."""
    from carebase.ml import registry, serving
    from carebase.ml.risk_assessment import headline, show_value
    from carebase.store.ml_models import ACTIVE

    store = web.records.ctx.store
    models = registry.list_models(store, status=ACTIVE)
    if not models:
        return []
    resources = read_compartment(web.records.ctx, patient_id)
    out = []
    for record in models:
        trained = registry.load(store, record.id)
        prediction = serving.predict(record, trained, patient_id, resources)
        factors = [
            (f.feature, show_value(f.value), float(f.contribution))
            for f in prediction.factors[:TOP_FACTORS]
        ]
        out.append(
            {
                "model": record,
                "headline": headline(prediction),
                "value": prediction.value,
                "kind": prediction.kind,
                "factors": factors,
                "bars": factor_bars(factors, f"factors-{record.id}", headline(prediction)),
            }
        )
    return out


async def risk_panel(web: WebPage) -> Response:
    """The risk panel."""
    patient_id = web.request.path_params["id"]
    require(web.records.may("Observation", "s"), web._("Your role may not do this."))
    web.writes("operation", "E")

    def load() -> dict[str, Any]:
        patient = summary(web.records.read("Patient", patient_id))
        return {"patient": patient, "items": predictions(web, patient_id)}

    return web.render("risk.html", {**await run_in_threadpool(load), "pid": patient_id})


async def model_card(web: WebPage) -> Response:
    """A model card (HTML from `ml.model_card`, plots beside it)."""
    model_id = web.request.path_params["model"]

    def load() -> str:
        from carebase.ml import registry
        from carebase.ml.model_card import render_html
        from carebase.ml.model_card_data import card_data

        return render_html(card_data(registry.get(web.records.ctx.store, model_id)), image_base="")

    headers = {"Cache-Control": "no-store", **card_headers()}
    return HTMLResponse(await run_in_threadpool(load), headers=headers)


async def model_card_image(web: WebPage) -> Response:
    """One plot of a model card (PNG)."""
    model_id, name = web.request.path_params["model"], web.request.path_params["image"]

    def draw() -> bytes:
        from carebase.ml import registry
        from carebase.ml.model_card import plots
        from carebase.ml.model_card_data import card_data

        images = plots(card_data(registry.get(web.records.ctx.store, model_id)))
        if name not in images:
            raise NotFound(f"Model card {model_id} has no image {name!r}")
        return images[name]

    return Response(await run_in_threadpool(draw), media_type="image/png")


def risk_routes() -> list[Route]:
    """The routes of this module."""
    area = page("clinician")
    return [
        Route(f"{APP}/patients/{{id}}/risk", area(risk_panel), methods=["GET"]),
        Route(f"{APP}/models/{{model}}/card", area(model_card), methods=["GET"]),
        Route(f"{APP}/models/{{model}}/{{image}}", area(model_card_image), methods=["GET"]),
    ]
