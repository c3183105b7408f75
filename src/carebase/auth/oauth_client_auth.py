"""Who is calling the token, introspection and revocation endpoints: client authentication.

- confidential clients: HTTP Basic with client_id:client_secret (`client_secret_basic`) or a
  signed JWT assertion (`private_key_jwt`);
- backend clients: `private_key_jwt` only;
- public clients: just `client_id` in the form (they have nothing to prove; PKCE protects
  their codes).
A request may use one method only. Failures are invalid_client (401).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from urllib.parse import unquote

import jwt

from carebase.auth.client_assertion import JWT_BEARER_ASSERTION, verify_client_assertion
from carebase.auth.oauth_errors import invalid_client, invalid_request
from carebase.auth.oauth_server import OAuthServer
from carebase.auth.opaque_tokens import digest_matches
from carebase.store.oauth_records import ClientRecord

#: token_endpoint_auth_methods_supported
AUTH_METHODS = ("client_secret_basic", "private_key_jwt", "none")


def _basic_credentials(authorization: str) -> tuple[str, str]:
    try:
        raw = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise invalid_client("The Basic credentials are not valid base64") from exc
    client_id, sep, secret = raw.partition(":")
    if not sep:
        raise invalid_client("The Basic credentials must be client_id:client_secret")
    # RFC 6749 2.3.1: both parts are form-urlencoded before base64
    return unquote(client_id), unquote(secret)


def authenticate_client(
    server: OAuthServer, form: Mapping[str, str], authorization: str | None
) -> ClientRecord:
    """The enabled client that made this request, authenticated as its kind requires."""
    basic = authorization is not None and authorization[:6].lower() == "basic "
    assertion = form.get("client_assertion")
    assertion_type = form.get("client_assertion_type")
    if "client_secret" in form:
        raise invalid_client("Send the client secret with HTTP Basic (client_secret_basic)")
    if basic and (assertion or assertion_type):
        raise invalid_request("Use one client authentication method, not Basic and a JWT")
    if basic:
        assert authorization is not None
        client_id, secret = _basic_credentials(authorization)
        if form.get("client_id") not in (None, client_id):
            raise invalid_client("client_id does not match the Basic credentials")
        client = server.enabled_client(client_id)
        if client.kind != "confidential" or not client.secret_hash:
            raise invalid_client(f"Client {client_id!r} has no client secret")
        if not digest_matches(secret, client.secret_hash):
            raise invalid_client("The client secret is wrong")
        return client
    if assertion or assertion_type:
        if assertion_type != JWT_BEARER_ASSERTION:
            raise invalid_client(f"client_assertion_type must be {JWT_BEARER_ASSERTION}")
        if not assertion:
            raise invalid_client("client_assertion is missing")
        try:
            issuer = jwt.decode(assertion, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError as exc:
            raise invalid_client("client_assertion is not a JWT") from exc
        if not isinstance(issuer, str) or not issuer:
            raise invalid_client("client_assertion has no iss (the client_id)")
        if form.get("client_id") not in (None, issuer):
            raise invalid_client("client_id does not match the client_assertion's iss")
        client = server.enabled_client(issuer)
        if client.kind == "public":
            raise invalid_client("A public client cannot authenticate with a JWT")
        verify_client_assertion(
            assertion, client, token_url=server.config.token_url, records=server.records
        )
        return client
    public_id = form.get("client_id")
    if not public_id:
        raise invalid_client("Client authentication is missing (client_id, Basic or a JWT)")
    client = server.enabled_client(public_id)
    if client.kind != "public":
        raise invalid_client(f"Client {public_id!r} must authenticate (it is {client.kind})")
    return client
