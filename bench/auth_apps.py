"""The two apps `bench_auth.py` serves, as uvicorn factories over one database.

`secured_app`: carebase as shipped (bearer tokens verified, access checked, every read
audited to the durable hash-chained trail). `open_app`: the same route handlers and hardening
middleware with no authentication and no audit entry (`bench_access._plain_app`), the
unauthenticated, unaudited baseline. Both read BENCH_DATABASE and CAREBASE_* settings.
"""

from __future__ import annotations

import os

from bench_access import _plain_app
from starlette.applications import Starlette

from carebase.api.app import create_app, tune_server_process
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
