"""The authorization server's records: clients, authorization codes, refresh tokens, revoked
access-token ids, used client-assertion ids and EHR launch contexts (SQL of migration 5).

Callers pass hashes, never the secrets themselves. Every check-and-set that must happen once
(using a code, rotating a refresh token, remembering an assertion `jti`) is a single
conditional UPDATE or INSERT whose row count says who won, so two concurrent requests
presenting the same credential cannot both succeed, on SQLite or PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from carebase.errors import StorageError
from carebase.store.base import Store
from carebase.store.sql_store import Cursor, SqlStore


@dataclass(frozen=True, slots=True)
class ClientRecord:
    """A registered OAuth client."""

    client_id: str
    name: str
    kind: str  # public | confidential | backend
    redirect_uris: tuple[str, ...]
    scopes: tuple[str, ...]
    secret_hash: str | None
    jwks: dict[str, Any] | None
    disabled: bool
    created: int


@dataclass(frozen=True, slots=True)
class CodeRecord:
    """An authorization code (by hash) and what it grants."""

    code_hash: str
    client_id: str
    user_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    code_challenge: str
    patient: str | None
    encounter: str | None
    nonce: str | None
    expires: int
    used: bool
    #: issued in an EHR launch (the EHR shows the patient banner, the app need not)
    ehr_launch: bool = False
    refresh_family: str | None = None
    access_jti: str | None = None
    access_expires: int | None = None


@dataclass(frozen=True, slots=True)
class RefreshRecord:
    """A refresh token (by hash) of a rotation family."""

    token_hash: str
    family: str
    client_id: str
    user_id: str
    scopes: tuple[str, ...]
    patient: str | None
    encounter: str | None
    expires: int
    ehr_launch: bool = False
    replaced: bool = False
    revoked: bool = False
    access_jti: str | None = None
    access_expires: int | None = None
    created: int = 0


@dataclass(frozen=True, slots=True)
class LaunchRecord:
    """An EHR launch context: who launched, for which patient (and encounter), until when."""

    launch_id: str
    patient: str | None
    encounter: str | None
    user_id: str
    expires: int


_CLIENT_COLUMNS = (
    "client_id, name, kind, redirect_uris, scopes, secret_hash, jwks, disabled, created"
)
_CODE_COLUMNS = (
    "code_hash, client_id, user_id, redirect_uri, scopes, code_challenge, patient, encounter,"
    " nonce, expires, used, refresh_family, access_jti, access_expires, ehr_launch"
)
_REFRESH_COLUMNS = (
    "token_hash, family, client_id, user_id, scopes, patient, encounter, expires, replaced,"
    " revoked, access_jti, access_expires, created, ehr_launch"
)


def _client(row: Any) -> ClientRecord:
    return ClientRecord(
        client_id=row[0],
        name=row[1],
        kind=row[2],
        redirect_uris=tuple(json.loads(row[3])),
        scopes=tuple(json.loads(row[4])),
        secret_hash=row[5],
        jwks=json.loads(row[6]) if row[6] else None,
        disabled=bool(row[7]),
        created=int(row[8]),
    )


def _code(row: Any) -> CodeRecord:
    return CodeRecord(
        code_hash=row[0],
        client_id=row[1],
        user_id=row[2],
        redirect_uri=row[3],
        scopes=tuple(json.loads(row[4])),
        code_challenge=row[5],
        patient=row[6],
        encounter=row[7],
        nonce=row[8],
        expires=int(row[9]),
        used=bool(row[10]),
        refresh_family=row[11],
        access_jti=row[12],
        access_expires=int(row[13]) if row[13] is not None else None,
        ehr_launch=bool(row[14]),
    )


def _refresh(row: Any) -> RefreshRecord:
    return RefreshRecord(
        token_hash=row[0],
        family=row[1],
        client_id=row[2],
        user_id=row[3],
        scopes=tuple(json.loads(row[4])),
        patient=row[5],
        encounter=row[6],
        expires=int(row[7]),
        replaced=bool(row[8]),
        revoked=bool(row[9]),
        access_jti=row[10],
        access_expires=int(row[11]) if row[11] is not None else None,
        created=int(row[12]),
        ehr_launch=bool(row[13]),
    )


def _changed(cur: Cursor) -> int:
    """Rows the last statement changed (both drivers' cursors have `rowcount`)."""
    return int(getattr(cur, "rowcount", -1))


class OAuthRecords:
    """SQL access to the OAuth tables of one store.

    `store` may be a function returning the store, for an app whose store is opened at
    startup, after the records object is made.
    """

    def __init__(self, store: Store | Callable[[], Store]) -> None:
        self._store = store

    @property
    def store(self) -> SqlStore:
        """The SQL store holding the tables."""
        store = self._store if isinstance(self._store, Store) else self._store()
        if not isinstance(store, SqlStore):
            raise StorageError("OAuth records need a SQL store (SQLite or PostgreSQL)")
        return store

    def q(self, sql: str) -> str:
        """`sql` with the store's placeholder style."""
        return self.store.q(sql)

    # --- clients ------------------------------------------------------------------------------
    def add_client(self, client: ClientRecord) -> None:
        """Store a new client."""
        with self.store.writing() as cur:
            cur.execute(
                self.q(f"INSERT INTO oauth_client ({_CLIENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)"),
                (
                    client.client_id,
                    client.name,
                    client.kind,
                    json.dumps(list(client.redirect_uris)),
                    json.dumps(list(client.scopes)),
                    client.secret_hash,
                    json.dumps(client.jwks) if client.jwks is not None else None,
                    int(client.disabled),
                    client.created,
                ),
            )

    def client(self, client_id: str) -> ClientRecord | None:
        """The client with this id, or None."""
        with self.store.reading() as cur:
            row = cur.execute(
                self.q(f"SELECT {_CLIENT_COLUMNS} FROM oauth_client WHERE client_id = ?"),
                (client_id,),
            ).fetchone()
        return _client(row) if row else None

    def clients(self) -> list[ClientRecord]:
        """Every client, oldest first."""
        with self.store.reading() as cur:
            rows = cur.execute(
                f"SELECT {_CLIENT_COLUMNS} FROM oauth_client ORDER BY created, name, client_id"
            ).fetchall()
        return [_client(r) for r in rows]

    def set_client_disabled(self, client_id: str, disabled: bool) -> bool:
        """Disable (or enable) a client; False if there is no such client."""
        with self.store.writing() as cur:
            cur.execute(
                self.q("UPDATE oauth_client SET disabled = ? WHERE client_id = ?"),
                (int(disabled), client_id),
            )
            return bool(_changed(cur))

    # --- authorization codes ------------------------------------------------------------------
    def add_code(self, code: CodeRecord) -> None:
        """Store a new, unused authorization code."""
        with self.store.writing() as cur:
            cur.execute(
                self.q(
                    "INSERT INTO oauth_code (code_hash, client_id, user_id, redirect_uri, scopes,"
                    " code_challenge, patient, encounter, nonce, expires, used, ehr_launch)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,0,?)"
                ),
                (
                    code.code_hash, code.client_id, code.user_id, code.redirect_uri,
                    json.dumps(list(code.scopes)), code.code_challenge, code.patient,
                    code.encounter, code.nonce, code.expires, int(code.ehr_launch),
                ),
            )  # fmt: skip

    def use_code(self, code_hash: str) -> tuple[CodeRecord | None, bool]:
        """Mark a code used: (its record, True) for the one caller that marked it; (record,
        False) when it had been used before (a replay); (None, False) for an unknown code."""
        with self.store.writing() as cur:
            cur.execute(
                self.q("UPDATE oauth_code SET used = 1 WHERE code_hash = ? AND used = 0"),
                (code_hash,),
            )
            first = _changed(cur) == 1
            row = cur.execute(
                self.q(f"SELECT {_CODE_COLUMNS} FROM oauth_code WHERE code_hash = ?"),
                (code_hash,),
            ).fetchone()
        return (_code(row) if row else None), first

    def link_code_tokens(
        self, code_hash: str, family: str | None, access_jti: str, access_expires: int
    ) -> None:
        """Remember the tokens issued from a code (revoked if the code is replayed)."""
        with self.store.writing() as cur:
            cur.execute(
                self.q(
                    "UPDATE oauth_code SET refresh_family = ?, access_jti = ?, access_expires = ?"
                    " WHERE code_hash = ?"
                ),
                (family, access_jti, access_expires, code_hash),
            )

    # --- refresh tokens -----------------------------------------------------------------------
    def add_refresh(self, token: RefreshRecord) -> None:
        """Store a new refresh token of a family."""
        with self.store.writing() as cur:
            self._insert_refresh(cur, token)

    def _insert_refresh(self, cur: Cursor, t: RefreshRecord) -> None:
        cur.execute(
            self.q(
                f"INSERT INTO oauth_refresh ({_REFRESH_COLUMNS})"
                " VALUES (?,?,?,?,?,?,?,?,0,0,?,?,?,?)"
            ),
            (
                t.token_hash, t.family, t.client_id, t.user_id, json.dumps(list(t.scopes)),
                t.patient, t.encounter, t.expires, t.access_jti, t.access_expires, t.created,
                int(t.ehr_launch),
            ),
        )  # fmt: skip

    def refresh(self, token_hash: str) -> RefreshRecord | None:
        """The refresh token with this hash (whatever its state), or None."""
        with self.store.reading() as cur:
            row = cur.execute(
                self.q(f"SELECT {_REFRESH_COLUMNS} FROM oauth_refresh WHERE token_hash = ?"),
                (token_hash,),
            ).fetchone()
        return _refresh(row) if row else None

    def rotate_refresh(self, old_hash: str, new: RefreshRecord) -> bool:
        """Replace a live refresh token by `new` (same family) in one unit; False when the old
        one was already replaced or revoked (someone used it first: a replay)."""
        with self.store.writing() as cur:
            cur.execute(
                self.q(
                    "UPDATE oauth_refresh SET replaced = 1"
                    " WHERE token_hash = ? AND replaced = 0 AND revoked = 0"
                ),
                (old_hash,),
            )
            if _changed(cur) != 1:
                return False
            self._insert_refresh(cur, new)
        return True

    def revoke_family(self, family: str) -> list[tuple[str, int]]:
        """Revoke every refresh token of a family; the (jti, expires) of the access tokens
        issued with them, for the revoked-jti list."""
        with self.store.writing() as cur:
            cur.execute(self.q("UPDATE oauth_refresh SET revoked = 1 WHERE family = ?"), (family,))
            rows = cur.execute(
                self.q(
                    "SELECT access_jti, access_expires FROM oauth_refresh"
                    " WHERE family = ? AND access_jti IS NOT NULL"
                ),
                (family,),
            ).fetchall()
        return [(r[0], int(r[1])) for r in rows]

    # --- revoked access tokens ----------------------------------------------------------------
    def revoke_jtis(self, jtis: Iterable[tuple[str, int]]) -> None:
        """Add access-token ids (with their expiry) to the revoked list."""
        rows = list(jtis)
        if not rows:
            return
        with self.store.writing() as cur:
            cur.executemany(
                self.q(
                    "INSERT INTO oauth_revoked_jti (jti, expires) VALUES (?, ?)"
                    " ON CONFLICT (jti) DO NOTHING"
                ),
                rows,
            )

    def revoked_jtis(self, now: int) -> set[str]:
        """The ids of revoked access tokens that have not expired yet."""
        with self.store.reading() as cur:
            rows = cur.execute(
                self.q("SELECT jti FROM oauth_revoked_jti WHERE expires >= ?"), (now,)
            ).fetchall()
        return {r[0] for r in rows}

    def purge_expired(self, before: int) -> None:
        """Forget revoked jtis, assertion jtis, codes and launches that expired before
        `before` (they can no longer be presented); keeps the tables small."""
        with self.store.writing() as cur:
            for table in ("oauth_revoked_jti", "oauth_assertion_jti", "oauth_launch"):
                cur.execute(self.q(f"DELETE FROM {table} WHERE expires < ?"), (before,))
            # codes are kept a day past expiry so a late replay still revokes their tokens
            cur.execute(self.q("DELETE FROM oauth_code WHERE expires < ?"), (before - 86_400,))

    # --- client assertions --------------------------------------------------------------------
    def remember_assertion(self, client_id: str, jti: str, expires: int) -> bool:
        """Record a client assertion's `jti`; False if this client used it before."""
        with self.store.writing() as cur:
            cur.execute(
                self.q(
                    "INSERT INTO oauth_assertion_jti (client_id, jti, expires) VALUES (?, ?, ?)"
                    " ON CONFLICT (client_id, jti) DO NOTHING"
                ),
                (client_id, jti, expires),
            )
            return _changed(cur) == 1

    # --- EHR launch contexts ------------------------------------------------------------------
    def add_launch(self, launch: LaunchRecord) -> None:
        """Store a new launch context."""
        with self.store.writing() as cur:
            cur.execute(
                self.q(
                    "INSERT INTO oauth_launch (launch_id, patient, encounter, user_id, expires)"
                    " VALUES (?, ?, ?, ?, ?)"
                ),
                (
                    launch.launch_id,
                    launch.patient,
                    launch.encounter,
                    launch.user_id,
                    launch.expires,
                ),
            )

    def launch(self, launch_id: str) -> LaunchRecord | None:
        """The launch context with this id, or None."""
        with self.store.reading() as cur:
            row = cur.execute(
                self.q(
                    "SELECT launch_id, patient, encounter, user_id, expires FROM oauth_launch"
                    " WHERE launch_id = ?"
                ),
                (launch_id,),
            ).fetchone()
        return LaunchRecord(row[0], row[1], row[2], row[3], int(row[4])) if row else None
