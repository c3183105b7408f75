"""`GET [base]/Patient/{id}/$everything`: the patient's whole record as a searchset Bundle.

The Patient and every resource of its compartment the caller may read (`read_compartment`:
under the caller's access guard, each resource noted for the audit entry), as one Bundle
(no paging; `_count`, `start`, `end`, `_since` and `_type` are not supported and are refused
with 400 rather than ignored). The patient portal's download is this Bundle.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from carebase.api.audited import audited
from carebase.api.ml_routes import read_compartment
from carebase.api.negotiation import is_true, render
from carebase.api.responses import fhir_response, guarded
from carebase.api.results import Context
from carebase.api.routes import FhirApi
from carebase.errors import BadRequest

_CONTROL = frozenset({"_format", "_pretty"})


def everything_bundle(ctx: Context, patient_id: str) -> dict[str, Any]:
    """The searchset Bundle of the patient's record (blocking)."""
    resources = read_compartment(ctx, patient_id)
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "total": len(resources),
        "link": [{"relation": "self", "url": f"{ctx.base}/Patient/{patient_id}/$everything"}],
        "entry": [
            {
                "fullUrl": f"{ctx.base}/{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ],
    }


class EverythingApi:
    """The `$everything` route over one FhirApi."""

    def __init__(self, api: FhirApi) -> None:
        self.api = api

    def routes(self) -> list[Route]:
        handler = audited(guarded(self.everything), "everything", FhirApi._trail)
        return [Route("/fhir/Patient/{id}/$everything", handler, methods=["GET"])]

    async def everything(self, request: Request) -> Response:
        """GET [base]/Patient/{id}/$everything."""
        for name in request.query_params:
            if name not in _CONTROL:
                raise BadRequest(
                    f"$everything here takes no parameter {name!r} (the whole record is "
                    "returned in one Bundle)",
                    location=name,
                )
        ctx = self.api.context(request)
        bundle = await run_in_threadpool(everything_bundle, ctx, request.path_params["id"])
        pretty = is_true(request.query_params.get("_pretty"))
        return fhir_response(render(bundle, pretty=pretty))
