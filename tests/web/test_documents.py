"""The chart's documents on SQLite and PostgreSQL: every DocumentReference listed, uploads
checked by content (type, size, signature) with nothing written on a refusal, downloads with
the stored content type, and an audit entry for each list, upload and download."""

from __future__ import annotations

import base64

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from web_world import World, csrf, errors, sign_in

from carebase.store import audit_records
from carebase.store.base import Store
from carebase.store.sql_store import SqlStore
from carebase.web.documents import MAX_DOCUMENT_BYTES

pytestmark = pytest.mark.asyncio
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def _documents(store: Store, patient: str) -> list[dict[str, object]]:
    page = store.search("DocumentReference", [("patient", patient)], count=500)
    out = []
    for entry in page.entries:
        stored = store.read("DocumentReference", entry.id)
        assert stored is not None and stored.body is not None
        out.append(orjson.loads(stored.body))
    return out


async def _upload(
    web: httpx.AsyncClient, path: str, token: str, name: str, content_type: str, data: bytes
) -> httpx.Response:
    fields = {"csrf_token": token, "title": f"Upload {name}", "kind": "Outside record"}
    return await web.post(path, data=fields, files={"file": (name, data, content_type)})


async def test_upload_list_and_download_with_the_stored_type(
    web: httpx.AsyncClient, audited_app: Starlette, world: World, store: Store
) -> None:
    await sign_in(web, "doc")
    path = f"/app/patients/{world.first}/documents"
    listing = await web.get(path)
    assert listing.status_code == 200 and 'enctype="multipart/form-data"' in listing.text
    before = len(_documents(store, world.first))
    token = csrf(listing.text)
    for name, kind, data in (
        ("scan.png", "image/png", PNG),
        ("letter.pdf", "application/pdf", PDF),
        ("notes.txt", "text/plain", "Blood pressure diary 血压\n".encode()),
    ):
        posted = await _upload(web, path, token, name, kind, data)
        assert posted.status_code == 303, posted.text
        (made,) = [
            d for d in _documents(store, world.first) if d.get("description") == f"Upload {name}"
        ]
        attachment = made["content"][0]["attachment"]  # type: ignore[index]
        assert base64.b64decode(attachment["data"]) == data
        assert attachment["contentType"] == kind and attachment["size"] == len(data)
        assert made["author"][0]["display"] == "Dr Doc"  # type: ignore[index]
        got = await web.get(f"{path}/{made['id']}/content/0")
        assert got.status_code == 200 and got.content == data
        assert got.headers["content-type"].split(";")[0] == kind
        assert got.headers["content-disposition"].startswith("attachment;")
    assert len(_documents(store, world.first)) == before + 3
    chart = await web.get(f"/app/patients/{world.first}")
    assert "Upload scan.png" in chart.text and f"{path}/" in chart.text
    notes = chart.text.split('id="note"', 1)[1].split('id="documents"', 1)[0]
    # notes are the documents with text: the uploaded text file, not the scan or the PDF
    assert "Blood pressure diary" in notes and notes.count("Outside record") == 1
    # the synthetic record's own documents are listed too, whatever their type
    page = await web.get(path)
    for document in _documents(store, world.first)[:5]:
        assert str(document["id"]) in page.text or document.get("content") is None
    audit = audited_app.state.audit_trail
    audit.flush()
    assert isinstance(store, SqlStore)
    query = audit_records.AuditQuery(patients=(world.first,))
    reads = [
        r
        for r in audit_records.search(store, query, limit=200)
        if any(e.startswith("DocumentReference/") for e in r.entities)
    ]
    assert {r.action for r in reads} >= {"C", "R"}


async def test_refused_uploads_write_nothing_and_say_why(
    web: httpx.AsyncClient, world: World, store: Store
) -> None:
    await sign_in(web, "doc")
    path = f"/app/patients/{world.first}/documents"
    token = csrf((await web.get(path)).text)
    before = len(_documents(store, world.first))
    cases = [
        ("fake.png", "image/png", b"MZ\x90\x00 not a png", "content is not a image/png"),
        ("tool.exe", "application/x-msdownload", b"MZ\x90\x00", "Upload a PDF, PNG, JPEG"),
        ("empty.pdf", "application/pdf", b"", "The file is empty"),
        ("big.txt", "text/plain", b"a" * (MAX_DOCUMENT_BYTES + 1), "larger than 5 MB"),
        ("bad.txt", "text/plain", b"\xff\xfe\x00", "content is not a text/plain"),
    ]
    for name, kind, data, message in cases:
        refused = await _upload(web, path, token, name, kind, data)
        assert refused.status_code == 400, name
        assert any(message in e for e in errors(refused.text)), (name, errors(refused.text))
    no_title = await web.post(
        path,
        data={"csrf_token": token, "kind": "Letter"},
        files={"file": ("a.pdf", PDF, "application/pdf")},
    )
    assert no_title.status_code == 400 and "This field is required" in errors(no_title.text)
    no_csrf = await web.post(
        path,
        data={"title": "x", "kind": "Letter"},
        files={"file": ("a.pdf", PDF, "application/pdf")},
    )
    assert no_csrf.status_code == 403
    assert len(_documents(store, world.first)) == before
    web.cookies.set("carebase_lang", "zh")
    chinese = await _upload(web, path, token, "fake.png", "image/png", b"GIF89a")
    assert "文件内容不是 image/png 文件" in errors(chinese.text)


async def test_an_upload_over_the_body_limit_is_refused_in_a_page(
    web: httpx.AsyncClient, audited_app: Starlette, world: World, store: Store
) -> None:
    """Beyond CAREBASE_MAX_UPLOAD_BYTES the body guard refuses before the page runs: a
    browser gets the error page in its language, an API client the OperationOutcome."""
    await sign_in(web, "doc")
    path = f"/app/patients/{world.first}/documents"
    token = csrf((await web.get(path)).text)
    before = len(_documents(store, world.first))
    limit = audited_app.state.fhir.settings.max_upload_bytes
    fields = {"csrf_token": token, "title": "Huge", "kind": "Outside record"}
    huge = {"file": ("huge.txt", b"a" * (limit + 1), "text/plain")}
    page = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    refused = await web.post(path, data=fields, files=huge, headers=page)
    assert refused.status_code == 413
    assert refused.headers["content-type"].startswith("text/html")
    assert "The upload or form is too large." in refused.text
    assert "CAREBASE_MAX_UPLOAD_BYTES" in refused.text  # the technical detail
    web.cookies.set("carebase_lang", "zh")
    chinese = await web.post(path, data=fields, files=huge, headers=page)
    assert chinese.status_code == 413 and "过大" in chinese.text
    api = await web.post(path, data=fields, files=huge, headers={"Accept": "application/json"})
    assert api.status_code == 413
    assert api.json()["resourceType"] == "OperationOutcome"
    fhir = await web.post("/fhir/DocumentReference", data=fields, files=huge, headers=page)
    assert fhir.status_code == 413  # the API answers in JSON, whatever the client accepts
    assert fhir.json()["resourceType"] == "OperationOutcome"
    assert len(_documents(store, world.first)) == before


async def test_documents_of_other_patients_and_roles(
    web: httpx.AsyncClient, world: World, store: Store
) -> None:
    await sign_in(web, "doc")
    path = f"/app/patients/{world.first}/documents"
    token = csrf((await web.get(path)).text)
    assert (await _upload(web, path, token, "a.pdf", "application/pdf", PDF)).status_code == 303
    (made,) = [d for d in _documents(store, world.first) if d.get("description") == "Upload a.pdf"]
    # the document under another patient's address is not found
    wrong = await web.get(f"/app/patients/{world.second}/documents/{made['id']}/content/0")
    assert wrong.status_code == 404
    missing = await web.get(f"{path}/{made['id']}/content/3")
    assert missing.status_code == 400
    await sign_in(web, "pat")
    assert (await web.get(f"{path}/{made['id']}/content/0")).status_code == 403
    await sign_in(web, "desk")  # front desk: no clinical documents
    assert (await web.get(path)).status_code == 403
