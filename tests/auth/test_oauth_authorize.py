"""Authorization requests: safe redirects, PKCE S256 only, aud, scopes, launch context."""

from __future__ import annotations

import time
from typing import Any

import pytest

from carebase.auth.oauth_authorize import (
    code_redirect,
    create_launch,
    error_redirect,
    grant_for,
    issue_code,
    parse_authorization,
    with_patient,
)
from carebase.auth.oauth_errors import OAuthError
from carebase.auth.oauth_server import OAuthServer
from carebase.auth.opaque_tokens import digest
from carebase.auth.scope_text import describe_scope
from carebase.store.oauth_records import ClientRecord
from oauth_helpers import CLINICIAN, FHIR_BASE, PATIENT, REDIRECT, RESEARCHER, pkce

APP_SCOPES = "openid fhirUser launch launch/patient offline_access patient/*.rs user/*.rs"


@pytest.fixture
def app_client(server: OAuthServer) -> ClientRecord:
    client, _ = server.registry.register(
        "App", "public", redirect_uris=[REDIRECT, "http://localhost:9000/cb"], scopes=APP_SCOPES
    )
    return client


def params(client: ClientRecord, **changes: Any) -> dict[str, str]:
    _, challenge = pkce()
    out = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": REDIRECT,
        "scope": "openid fhirUser launch/patient patient/*.rs",
        "state": "st4te",
        "aud": FHIR_BASE,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    out.update(changes)
    return {k: v for k, v in out.items() if v is not None}


def refused(server: OAuthServer, p: dict[str, str]) -> OAuthError:
    with pytest.raises(OAuthError) as caught:
        parse_authorization(server, p)
    return caught.value


def test_valid_request(server: OAuthServer, app_client: ClientRecord) -> None:
    request = parse_authorization(server, params(app_client, nonce="n1"))
    assert request.client == app_client
    assert request.scopes == ("openid", "fhirUser", "launch/patient", "patient/*.rs")
    assert request.nonce == "n1" and request.launch is None
    assert dict(request.params)["state"] == "st4te"


@pytest.mark.parametrize(
    "uri",
    [
        "https://app.example/cb.evil.com",
        "https://app.example/cb/../x",
        "https://app.example/cb/",
        "https://app.example/cb?x=1",
        "https://APP.example/cb",
        "https://evil.example/cb",
        "http://localhost:9001/cb",
        "",
    ],
)
def test_unregistered_redirect_is_never_redirected_to(
    server: OAuthServer, app_client: ClientRecord, uri: str
) -> None:
    error = refused(server, params(app_client, redirect_uri=uri))
    assert not error.redirectable
    assert error.error == "invalid_request"


def test_unknown_or_disabled_client_is_not_redirectable(
    server: OAuthServer, app_client: ClientRecord
) -> None:
    assert not refused(server, params(app_client, client_id="nope")).redirectable
    assert not refused(server, params(app_client, client_id=None)).redirectable
    server.registry.disable(app_client.client_id)
    error = refused(server, params(app_client))
    assert error.error == "unauthorized_client" and not error.redirectable


@pytest.mark.parametrize(
    ("changes", "error", "words"),
    [
        ({"code_challenge_method": None}, "invalid_request", "S256"),
        ({"code_challenge_method": "plain"}, "invalid_request", "plain"),
        ({"code_challenge": None}, "invalid_request", "code_challenge"),
        ({"code_challenge": "short"}, "invalid_request", "code_challenge"),
        ({"response_type": "token"}, "unsupported_response_type", "code"),
        ({"state": None}, "invalid_request", "state"),
        ({"aud": "https://other.example/fhir"}, "invalid_request", "aud"),
        ({"aud": None}, "invalid_request", "aud"),
        ({"scope": "system/*.rs"}, "invalid_scope", "allowed"),
        ({"scope": "patient/Observation.zz"}, "invalid_scope", "SMART"),
        ({"launch": "unknown"}, "invalid_request", "launch"),
    ],
)
def test_redirectable_errors(
    server: OAuthServer, app_client: ClientRecord, changes: dict[str, Any], error: str, words: str
) -> None:
    caught = refused(server, params(app_client, **changes))
    assert caught.redirectable
    assert caught.error == error
    assert words in caught.description


def test_scopes_narrowed_to_client(server: OAuthServer, app_client: ClientRecord) -> None:
    request = parse_authorization(
        server, params(app_client, scope="patient/*.cruds user/Observation.rs system/*.rs openid")
    )
    assert request.scopes == ("patient/*.rs", "user/Observation.rs", "openid")


def test_patient_user_gets_own_record(server: OAuthServer, app_client: ClientRecord) -> None:
    request = parse_authorization(
        server, params(app_client, scope="launch/patient patient/*.rs user/*.rs")
    )
    grant = grant_for(request, PATIENT)
    assert grant.patient == "pat1" and not grant.needs_patient
    assert grant.scopes == ("launch/patient", "patient/*.rs")  # no user/ scope for a patient


def test_clinician_must_pick_a_patient(server: OAuthServer, app_client: ClientRecord) -> None:
    request = parse_authorization(server, params(app_client))
    grant = grant_for(request, CLINICIAN)
    assert grant.needs_patient and grant.patient is None
    with pytest.raises(OAuthError, match="patient must be chosen"):
        issue_code(server, request, CLINICIAN, grant)
    picked = with_patient(grant, "pat7")
    code = issue_code(server, request, CLINICIAN, picked)
    record, _ = server.records.use_code(digest(code))
    assert record is not None and record.patient == "pat7" and record.user_id == "1"
    assert record.expires <= time.time() + 60 and not record.ehr_launch


def test_no_patient_needed_for_user_scopes(server: OAuthServer, app_client: ClientRecord) -> None:
    request = parse_authorization(server, params(app_client, scope="openid user/*.rs"))
    grant = grant_for(request, CLINICIAN)
    assert not grant.needs_patient and grant.patient is None


def test_role_without_scopes_is_denied(server: OAuthServer, app_client: ClientRecord) -> None:
    request = parse_authorization(server, params(app_client, scope="user/*.rs"))
    with pytest.raises(OAuthError) as caught:
        grant_for(request, RESEARCHER)
    assert caught.value.error == "access_denied"


def test_ehr_launch_context(server: OAuthServer, app_client: ClientRecord) -> None:
    launch = create_launch(server, "1", "pat9", "enc3")
    request = parse_authorization(
        server, params(app_client, launch=launch, scope="launch openid patient/*.rs")
    )
    grant = grant_for(request, CLINICIAN)
    assert (grant.patient, grant.encounter, grant.needs_patient) == ("pat9", "enc3", False)
    record, _ = server.records.use_code(digest(issue_code(server, request, CLINICIAN, grant)))
    assert record is not None and record.ehr_launch and record.encounter == "enc3"
    # another user cannot ride on this launch
    with pytest.raises(OAuthError, match="another user"):
        grant_for(request, PATIENT)


def test_expired_launch(server: OAuthServer, app_client: ClientRecord) -> None:
    launch = create_launch(server, "1", "pat9")
    error = None
    try:
        parse_authorization(server, params(app_client, launch=launch), now=time.time() + 400)
    except OAuthError as exc:
        error = exc
    assert error is not None and "expired" in error.description


def test_redirect_urls() -> None:
    assert code_redirect("https://a/cb", "c1", "s", "http://i") == (
        "https://a/cb?code=c1&state=s&iss=http%3A%2F%2Fi"
    )
    assert code_redirect("https://a/cb?x=1", "c", "s", "i").startswith("https://a/cb?x=1&code=c")
    url = error_redirect("https://a/cb", OAuthError("access_denied", "no"), "s", "i")
    assert url == "https://a/cb?error=access_denied&error_description=no&state=s&iss=i"


@pytest.mark.parametrize(
    ("scope", "text"),
    [
        ("patient/Observation.rs", "Read and search the selected patient's observation records"),
        ("user/*.cruds", "Create, read, update, delete and search records of every kind that"),
        ("system/*.rs", "Read and search records of every kind of all patients"),
        ("patient/MedicationRequest.r", "Read the selected patient's medication request records"),
        ("offline_access", "Keep access when you are not using it"),
        (
            "patient/Observation.rs?category=http://x|laboratory",
            "observation records (only where category = laboratory)",
        ),
    ],
)
def test_scope_descriptions(scope: str, text: str) -> None:
    assert text in describe_scope(scope)


def test_narrowing_drops_what_another_scope_covers() -> None:
    from carebase.auth.oauth_scopes import narrow_scopes, within

    allowed = ["patient/*.rs", "patient/Observation.rs?category=http://x|laboratory"]
    assert narrow_scopes(allowed, allowed) == ["patient/*.rs"]
    assert narrow_scopes(["system/Observation.rs?category=http://x|lab"], ["system/*.cruds"]) == [
        "system/Observation.rs?category=http://x|lab"
    ]
    assert narrow_scopes(["user/*.rs"], ["user/Patient.cruds", "patient/*.rs"]) == [
        "user/Patient.rs"
    ]
    assert within(["patient/*.rs"], ["patient/*.rs", "patient/Observation.r"])
    assert not within(["patient/Observation.rs"], ["patient/*.rs"])
    assert not within(["patient/*.r"], ["patient/*.rs"])
