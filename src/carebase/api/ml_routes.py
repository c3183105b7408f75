"""The HTTP side of risk prediction: `Patient/{id}/$predict`, CDS Hooks (`/cds-services`)
and model cards (`/ml/models/{id}/card`).

`$predict` and a CDS call without full prefetch read the patient's compartment the way a
compartment search does: under the caller's access guard (a patient token only for itself;
a resource the caller may not see is as absent), every resource noted for the audit entry.
Every route is audited like a FHIR interaction; `persist=true` adds the audited create of
the RiskAssessment. CDS Hooks discovery is public (it names tasks, never patients); the
services and the model cards need a bearer token (the authentication middleware).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from carebase.api import interactions
from carebase.api.audited import audited
from carebase.api.negotiation import is_true, render
from carebase.api.request_body import parse_json, read_body
from carebase.api.responses import fhir_response, guarded
from carebase.api.results import Context
from carebase.api.routes import FhirApi, by_method
from carebase.api.security_headers import policy_allowing_styles
from carebase.auth.audit_entry import AuditEntry
from carebase.errors import BadRequest, Forbidden, NotFound, PreconditionFailed
from carebase.fhir.definitions.loader import get_definitions
from carebase.store.base import every_match
from carebase.store.ml_models import ACTIVE

if TYPE_CHECKING:
    from carebase.ml.registry import ModelRecord
    from carebase.ml.risk_assessment import Prediction
    from carebase.ml.tasks import Task

# The ml package is imported on first use, not here: scikit-learn, pandas and matplotlib take
# seconds to import, which every server start and every `carebase` command would pay.

#: Resources per page when reading a compartment.
PAGE = 500
_PREDICT_PARAMS = frozenset({"model", "persist", "_format", "_pretty"})


def read_compartment(ctx: Context, patient_id: str) -> list[dict[str, Any]]:
    """The Patient and every resource of its compartment the caller may read (404 when the
    patient is not one the caller may see); each noted on the guard for the audit.

    One compartment search per resource type of the Patient compartment, each under the
    caller's restriction for that type (types the caller may not search are left out, as
    absent). One search over all types at once builds a branch per type into one SQL
    statement, which PostgreSQL plans slowly under a patient restriction (seconds for a
    patient of 230 resources, against 50-80 ms type by type: docs/web.md, Performance).
    """
    interactions.require_id(patient_id)
    ctx.guard.read(ctx.store, "Patient", patient_id)
    patient = ctx.store.read("Patient", patient_id)
    if patient is None or patient.body is None or patient.deleted:
        raise NotFound(f"Patient/{patient_id} is not known", location=f"Patient/{patient_id}")
    ctx.guard.saw(patient)
    resources = [orjson.loads(patient.body)]
    policy = ctx.guard.policy
    for type_ in sorted(get_definitions().patient_compartment):
        if type_ == "Patient" or policy.visibility(type_, "s") is None:
            continue
        restriction, _ = ctx.guard.search(type_, [])
        found = list(
            every_match(ctx.store, type_, [], PAGE, compartment=("Patient", patient_id),
                        restriction=restriction)
        )  # fmt: skip
        ctx.guard.saw_all(found)
        resources.extend(orjson.loads(s.body) for s in found if s.body is not None)
    return resources


def card_headers() -> dict[str, str]:
    """The CSP of a model card page: the app's policy, plus the card's own inline style by
    its hash (scripts stay `'self'` only)."""
    from carebase.ml.model_card import card_style_source

    return {"Content-Security-Policy": policy_allowing_styles(card_style_source())}


class MlApi:
    """The prediction, CDS Hooks and model card endpoints over one FhirApi's store."""

    def __init__(self, api: FhirApi) -> None:
        self.api = api

    def routes(self) -> list[Route]:
        """Starlette routes; all but discovery guarded and audited."""
        table: list[tuple[str, dict[str, str]]] = [
            ("/fhir/Patient/{id}/$predict", {"GET": "predict", "POST": "predict"}),
            ("/cds-services/{service}", {"POST": "cds_service"}),
            ("/ml/models/{model}/card", {"GET": "card"}),
            ("/ml/models/{model}/{image:path}", {"GET": "card_image"}),
        ]
        routes = [Route("/cds-services", guarded(self.cds_discovery), methods=["GET"])]
        for path, methods in table:
            handlers = {
                method: audited(guarded(getattr(self, name)), f"ml_{name}", FhirApi._trail)
                for method, name in methods.items()
            }
            routes.append(Route(path, by_method(handlers), methods=list(handlers)))
        return routes

    # --- $predict -----------------------------------------------------------------------------

    async def predict(self, request: Request) -> Response:
        """GET/POST [base]/Patient/{id}/$predict?model=ID&persist=true: a RiskAssessment."""
        params = await self._predict_params(request)
        ctx = self.api.context(request)
        ctx.guard.query = "&".join(f"{k}={v}" for k, v in params.items()) or None
        patient_id = request.path_params["id"]
        persist = _boolean(params.get("persist", "false"), "persist")

        def run() -> tuple[dict[str, Any], int]:
            from carebase.ml import registry, serving
            from carebase.ml.risk_assessment import risk_assessment

            record = registry.serving(ctx.store, params.get("model"))
            trained = registry.load(ctx.store, record.id)
            resources = read_compartment(ctx, patient_id)
            prediction = serving.predict(record, trained, patient_id, resources)
            resource = risk_assessment(prediction)
            if not persist:
                return resource, 200
            with ctx.store.transaction() as tx:
                result = interactions.create(ctx, tx, "RiskAssessment", resource)
            assert result.stored is not None and result.stored.body is not None
            return orjson.loads(result.stored.body), 201

        body, status = await run_in_threadpool(run)
        if status == 201:
            self._audit_create(request, body)
        pretty = is_true(request.query_params.get("_pretty"))
        return fhir_response(render(body, pretty=pretty), status)

    async def _predict_params(self, request: Request) -> dict[str, str]:
        pairs = list(request.query_params.multi_items())
        if request.method == "POST":
            raw = await read_body(request, self.api.settings.max_body_bytes)
            if raw.strip():
                pairs += _parameters(parse_json(raw, self.api.settings.max_json_depth))
        found: dict[str, str] = {}
        for name, value in pairs:
            if name not in _PREDICT_PARAMS:
                raise BadRequest(
                    f"$predict has no parameter {name!r}; it takes model and persist",
                    location=name,
                )
            if name in found and found[name] != value:
                raise BadRequest(f"{name} is given twice", location=name)
            found[name] = value
        if "model" in found and not found["model"]:
            raise BadRequest("model is empty: give a model id, or leave it out", location="model")
        return found

    def _audit_create(self, request: Request, body: dict[str, Any]) -> None:
        """The audit entry of the persisted RiskAssessment (the prediction's own entry is
        the operation's)."""
        principal = self.api.context(request).guard.principal
        subject = body.get("subject", {}).get("reference", "")
        FhirApi._trail(request).record(
            AuditEntry(
                interaction="create",
                action="C",
                outcome="0",
                principal=principal,
                entities=(f"RiskAssessment/{body.get('id')}",),
                patients=(subject.removeprefix("Patient/"),) if subject else (),
                description=f"$predict persisted RiskAssessment/{body.get('id')}",
                break_glass=principal.break_glass,
            )
        )

    # --- CDS Hooks ----------------------------------------------------------------------------

    def _active_tasks(self) -> list[tuple[ModelRecord, Task]]:
        from carebase.ml import registry
        from carebase.ml.tasks import load_task

        found = registry.list_models(self.api.store, status=ACTIVE)
        return [(record, load_task(record.task)) for record in found]

    async def cds_discovery(self, request: Request) -> Response:
        """GET /cds-services: one patient-view service per task with an active model."""
        from carebase.ml.serving import discovery

        services = await run_in_threadpool(self._active_tasks)
        return JSONResponse(discovery(services))

    async def cds_service(self, request: Request) -> Response:
        """POST /cds-services/{id}: a patient-view call; cards with the risk."""
        from carebase.ml import registry, serving
        from carebase.ml.cds_schema import errors_of, request_issues

        raw = await read_body(request, self.api.settings.max_body_bytes)
        # the prefetch is read for features, never stored or echoed: floats serve
        body = parse_json(raw, self.api.settings.max_json_depth, exact_decimals=False)
        problems = errors_of(request_issues(body))
        if problems:
            raise BadRequest("The CDS Hooks request is malformed", issues=problems)
        assert isinstance(body, dict)
        if body["hook"] != "patient-view":
            raise BadRequest(
                f"Service {request.path_params['service']} answers the patient-view hook, "
                f"not {body['hook']}",
                location="hook",
            )
        ctx = self.api.context(request)
        task_name = request.path_params["service"]
        patient_id: str = body["context"]["patientId"]
        ctx.guard.patients[patient_id] = None
        ctx.guard.query = f"hook={body['hook']}&hookInstance={body['hookInstance']}"

        def run() -> tuple[Prediction, str]:
            record = registry.serving(ctx.store, None, task_name)
            trained = registry.load(ctx.store, record.id)
            templates = serving.prefetch_templates(trained.task)
            resources = serving.prefetched_resources(body.get("prefetch"), templates, patient_id)
            if resources is None:
                resources = self._fetch(ctx, patient_id, templates, body.get("prefetch"))
            return serving.predict(record, trained, patient_id, resources), record.id

        prediction, model_id = await run_in_threadpool(run)
        card_url = self._card_url(request, model_id)
        return JSONResponse(serving.cards(prediction, card_url))

    @staticmethod
    def _fetch(
        ctx: Context, patient_id: str, templates: dict[str, str], prefetch: Any
    ) -> list[dict[str, Any]]:
        """The compartment from the store, when the prefetch is incomplete; 412 naming the
        missing keys when the caller may not read it (or it is not here)."""
        try:
            return read_compartment(ctx, patient_id)
        except (NotFound, Forbidden) as exc:
            missing = [k for k in templates if not isinstance(prefetch, dict) or k not in prefetch]
            raise PreconditionFailed(
                f"Prefetch {', '.join(missing)} missing and Patient/{patient_id} cannot be "
                f"read with this access token ({exc.message}); send the prefetch",
                location="prefetch",
            ) from exc

    def _card_url(self, request: Request, model_id: str) -> str:
        base = self.api.base_url(request).removesuffix("/fhir")
        return f"{base}/ml/models/{model_id}/card"

    # --- model cards --------------------------------------------------------------------------

    async def card(self, request: Request) -> Response:
        """GET /ml/models/{id}/card: the model card as HTML (plots linked beside it)."""
        model_id = request.path_params["model"]
        html = await run_in_threadpool(self._card_html, model_id)
        return HTMLResponse(html, headers=card_headers())

    def _card_html(self, model_id: str) -> str:
        from carebase.ml import registry
        from carebase.ml.model_card import render_html
        from carebase.ml.model_card_data import card_data

        record = registry.get(self.api.store, model_id)
        return render_html(card_data(record), image_base="")

    async def card_image(self, request: Request) -> Response:
        """GET /ml/models/{id}/{name}.png: one plot of the card."""
        model_id, name = request.path_params["model"], request.path_params["image"]

        def draw() -> bytes:
            from carebase.ml import registry
            from carebase.ml.model_card import plots
            from carebase.ml.model_card_data import card_data

            images = plots(card_data(registry.get(self.api.store, model_id)))
            if name not in images:
                raise NotFound(
                    f"Model card {model_id} has no image {name!r} ({', '.join(images)})",
                    location="image",
                )
            return images[name]

        return Response(await run_in_threadpool(draw), media_type="image/png")


def _boolean(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise BadRequest(f"{name} must be true or false, not {value!r}", location=name)
    return lowered == "true"


def _parameters(body: object) -> list[tuple[str, str]]:
    """(name, value) pairs of a Parameters body (valueString, valueId, valueBoolean)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise BadRequest("POST $predict takes a Parameters resource (or none)", location="body")
    pairs = []
    for i, param in enumerate(body.get("parameter") or []):
        if not isinstance(param, dict) or not isinstance(param.get("name"), str):
            raise BadRequest("each parameter needs a name", location=f"Parameters.parameter[{i}]")
        value = next((v for k, v in param.items() if k.startswith("value")), None)
        if isinstance(value, bool):
            value = "true" if value else "false"
        if not isinstance(value, str):
            raise BadRequest(
                f"parameter {param['name']} needs valueString, valueId or valueBoolean",
                location=f"Parameters.parameter[{i}]",
            )
        pairs.append((param["name"], value))
    return pairs
