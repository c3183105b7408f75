"""Migration 5 (see store/schema.py): the OAuth 2.0 / SMART authorization server's tables.

Secrets (client secrets, authorization codes, refresh tokens) are stored as SHA-256 hashes
only: a copy of the database never yields a usable credential. Times are Unix seconds.
"""

from __future__ import annotations

#: Every table of the authorization server (tests truncate them between runs).
OAUTH_TABLES: tuple[str, ...] = (
    "oauth_client",
    "oauth_code",
    "oauth_refresh",
    "oauth_revoked_jti",
    "oauth_assertion_jti",
    "oauth_launch",
)

_DDL = (
    # redirect_uris and scopes are JSON lists; jwks is a JSON Web Key Set (private_key_jwt)
    "CREATE TABLE oauth_client ("
    " client_id TEXT PRIMARY KEY,"
    " name TEXT NOT NULL,"
    " kind TEXT NOT NULL,"
    " redirect_uris TEXT NOT NULL,"
    " scopes TEXT NOT NULL,"
    " secret_hash TEXT,"
    " jwks TEXT,"
    " disabled SMALLINT NOT NULL DEFAULT 0,"
    " created {big} NOT NULL)",
    # one row per authorization code; the tokens issued from it are remembered so that a
    # replayed code can revoke them (RFC 6749 section 4.1.2)
    "CREATE TABLE oauth_code ("
    " code_hash TEXT PRIMARY KEY,"
    " client_id TEXT NOT NULL,"
    " user_id TEXT NOT NULL,"
    " redirect_uri TEXT NOT NULL,"
    " scopes TEXT NOT NULL,"
    " code_challenge TEXT NOT NULL,"
    " patient TEXT,"
    " encounter TEXT,"
    " nonce TEXT,"
    " ehr_launch SMALLINT NOT NULL DEFAULT 0,"
    " expires {big} NOT NULL,"
    " used SMALLINT NOT NULL DEFAULT 0,"
    " refresh_family TEXT,"
    " access_jti TEXT,"
    " access_expires {big})",
    # refresh tokens rotate: each use replaces the row's token by a new row of the same family
    "CREATE TABLE oauth_refresh ("
    " token_hash TEXT PRIMARY KEY,"
    " family TEXT NOT NULL,"
    " client_id TEXT NOT NULL,"
    " user_id TEXT NOT NULL,"
    " scopes TEXT NOT NULL,"
    " patient TEXT,"
    " encounter TEXT,"
    " ehr_launch SMALLINT NOT NULL DEFAULT 0,"
    " expires {big} NOT NULL,"
    " replaced SMALLINT NOT NULL DEFAULT 0,"
    " revoked SMALLINT NOT NULL DEFAULT 0,"
    " access_jti TEXT,"
    " access_expires {big},"
    " created {big} NOT NULL)",
    "CREATE INDEX oauth_refresh_family ON oauth_refresh (family)",
    "CREATE TABLE oauth_revoked_jti (jti TEXT PRIMARY KEY, expires {big} NOT NULL)",
    "CREATE INDEX oauth_revoked_jti_expires ON oauth_revoked_jti (expires)",
    "CREATE TABLE oauth_assertion_jti ("
    " client_id TEXT NOT NULL, jti TEXT NOT NULL, expires {big} NOT NULL,"
    " PRIMARY KEY (client_id, jti))",
    "CREATE INDEX oauth_assertion_jti_expires ON oauth_assertion_jti (expires)",
    "CREATE TABLE oauth_launch ("
    " launch_id TEXT PRIMARY KEY,"
    " patient TEXT,"
    " encounter TEXT,"
    " user_id TEXT NOT NULL,"
    " expires {big} NOT NULL)",
)


def oauth_ddl(dialect: str) -> tuple[str, ...]:
    """The statements of migration 5 in `dialect` ("sqlite" or "postgresql")."""
    big = "INTEGER" if dialect == "sqlite" else "BIGINT"
    return tuple(s.format(big=big) for s in _DDL)
