"""`carebase clients add/list/disable` as real subprocesses, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_migrate import assert_one_line_error, run_cli

from carebase.auth.opaque_tokens import digest
from carebase.store.factory import open_store
from carebase.store.oauth_records import OAuthRecords
from oauth_helpers import rsa_key


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cli.db'}"
    return str(request.getfixturevalue("fresh_pg_url"))


def _client_id(stdout: str) -> str:
    match = re.search(r"client_id: (\S+)", stdout)
    assert match, stdout
    return match.group(1)


def test_add_list_disable(db_url: str, tmp_path: Path) -> None:
    public = run_cli(
        "clients", "add", "Patient Viewer", "--redirect-uri", "https://app.example/cb",
        "--redirect-uri", "http://localhost:3000/cb",
        "--scope", "openid launch/patient patient/*.rs", "--database", db_url,
    )  # fmt: skip
    assert public.returncode == 0, public.stderr
    public_id = _client_id(public.stdout)
    assert "client_secret" not in public.stdout

    confidential = run_cli(
        "clients", "add", "Portal", "--kind", "confidential", "--redirect-uri",
        "https://portal.example/cb", "--scope", "user/*.rs", "--database", db_url,
    )  # fmt: skip
    assert confidential.returncode == 0, confidential.stderr
    secret = re.search(r"client_secret: (\S+)", confidential.stdout)
    assert secret and "shown only this once" in confidential.stderr

    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(rsa_key().jwks))
    backend = run_cli(
        "clients", "add", "Nightly export", "--kind", "backend", "--scope", "system/*.rs",
        "--jwks", str(jwks_file), "--database", db_url,
    )  # fmt: skip
    assert backend.returncode == 0, backend.stderr
    backend_id = _client_id(backend.stdout)

    listed = run_cli("clients", "list", "--database", db_url, COLUMNS="200")
    assert listed.returncode == 0, listed.stderr
    for text in (public_id, backend_id, "Patient Viewer", "confidential", "enabled"):
        assert text in listed.stdout

    disabled = run_cli("clients", "disable", public_id, "--database", db_url)
    assert disabled.returncode == 0 and "disabled" in disabled.stdout

    store = open_store(db_url)
    try:
        records = OAuthRecords(store)
        stored = {c.name: c for c in records.clients()}
    finally:
        store.close()
    assert stored["Patient Viewer"].disabled
    assert stored["Patient Viewer"].redirect_uris == (
        "https://app.example/cb",
        "http://localhost:3000/cb",
    )
    assert stored["Portal"].secret_hash == digest(secret.group(1))
    assert stored["Nightly export"].jwks == json.loads(jwks_file.read_text())


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--redirect-uri", "http://evil.example/cb", "--scope", "openid"], ["https"]),
        (["--redirect-uri", "https://a.example/cb#x", "--scope", "openid"], ["fragment"]),
        (["--kind", "robot", "--scope", "openid"], ["robot"]),
        (["--redirect-uri", "https://a.example/cb", "--scope", "patient/x.rs"], ["SMART"]),
        (["--kind", "backend", "--scope", "system/*.rs"], ["JWKS"]),
        (
            ["--kind", "backend", "--scope", "system/*.rs", "--jwks", "/no/such.json"],
            ["Cannot read"],
        ),
        (["--kind", "backend", "--scope", "system/*.rs", "--jwks", "{bad"], ["JSON"]),
    ],
)
def test_add_refuses_with_one_line(db_url: str, args: list[str], words: list[str]) -> None:
    proc = run_cli("clients", "add", "App", *args, "--database", db_url)
    assert_one_line_error(proc, *words)
    listed = run_cli("clients", "list", "--database", db_url)
    assert "No clients registered" in listed.stdout


def test_disable_unknown(db_url: str) -> None:
    assert_one_line_error(
        run_cli("clients", "disable", "nope", "--database", db_url), "no client", "nope"
    )
