"""The two apps `bench_auth.py` serves, as uvicorn factories over one database.

`secured_app`: carebase as shipped (bearer tokens verified, access checked, every read
audited to the durable hash-chained trail). `open_app`: the same route handlers and hardening
middleware with no authentication and no audit entry (`bench_access._plain_app`), the
unauthenticated, unaudited baseline. `unpersisted_app` (for `bench_auth_stages.py`):
carebase as shipped up to the audit trail, whose entries are built and encoded as the
process trail encodes them, then dropped: what security costs before anything is written.
All read CAREBASE_* settings.
"""

from __future__ import annotations

import os

from bench_access import _plain_app
from starlette.applications import Starlette

from carebase.api.app import create_app, tune_server_process
from carebase.auth.audit_detail import entry_message
from carebase.auth.audit_entry import AuditEntry, AuditTrail
from carebase.config import Settings
from carebase.store.factory import open_store


def secured_app() -> Starlette:
    """carebase with authentication, access control and the durable audit trail."""
    tune_server_process()
    return create_app(Settings.from_env())


def open_app() -> Starlette:
    """The same handlers without authentication or audit."""
    tune_server_process()
    settings = Settings.from_env()
    store = open_store(os.environ["CAREBASE_DATABASE_URL"], settings)
    return _plain_app(create_app(settings, store))


class _EncodingTrail(AuditTrail):
    """Encodes every entry as the process trail does before sending it, and keeps nothing
    (a benchmark's stage, never a deployment's trail)."""

    def record(self, entry: AuditEntry) -> None:
        entry_message(entry)


def unpersisted_app() -> Starlette:
    """carebase with authentication, access control and audit entries that are not written."""
    tune_server_process()
    return create_app(Settings.from_env(), audit=_EncodingTrail())
