"""Shared fixtures: settings, and a `store` on both SQLite and PostgreSQL.

PostgreSQL comes from CAREBASE_TEST_POSTGRES_URL, else a server on 127.0.0.1:5432 if one
answers, else a throwaway server from the `pgserver` pip package. Which one is printed; a
missing PostgreSQL fails the run rather than skipping silently.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from carebase.auth.keys import KeyRing
from carebase.config import Settings
from carebase.store.base import Store
from carebase.store.bulk_jobs import BULK_TABLES
from carebase.store.factory import open_store
from carebase.store.ml_models import ML_TABLES
from carebase.store.oauth_schema import OAUTH_TABLES
from carebase.store.schema import (
    ACCOUNT_TABLES,
    AUDIT_TABLES,
    INDEX_TABLES,
    REINDEX_TABLE,
    TEXT_TABLE,
)
from carebase.telehealth.room_store import TELEHEALTH_TABLES
from shared_data import SYNTHEA_TAR

# One OpenMP thread (read when scikit-learn first loads, after this): the tests' models are
# small, and on a shared 2-core machine gradient boosting's per-tree thread hand-offs made
# its training and prediction 5-10x slower than one thread (hgb with 3 folds: 5-9 s vs 1 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def _postgres_server_url(tmp_root: Path) -> tuple[str, str]:
    env = os.environ.get("CAREBASE_TEST_POSTGRES_URL")
    if env:
        return env, "CAREBASE_TEST_POSTGRES_URL"
    if _answers(LOCAL_POSTGRES):
        return LOCAL_POSTGRES, "server on 127.0.0.1:5432"
    import pgserver  # a pip package bundling PostgreSQL binaries

    server = pgserver.get_server(str(tmp_root / "pgserver"), cleanup_mode="stop")
    return server.get_uri(), "throwaway pgserver"


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema private to this test session."""
    server_url, source = _postgres_server_url(tmp_path_factory.mktemp("pg"))
    schema = f"t_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    print(f"\n[carebase tests] PostgreSQL: {source}, schema {schema}")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in server_url else "?"
    yield f"{server_url}{sep}options={quote(f'-csearch_path={schema}')}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(scope="session")
def _pg_store(postgres_url: str) -> Iterator[Store]:
    store = open_store(postgres_url, Settings(pool_size=4))
    store.migrate()
    yield store
    store.close()


def _truncate(postgres_url: str) -> None:
    tables = ", ".join(
        [
            "resource",
            "resource_version",
            *INDEX_TABLES,
            TEXT_TABLE,
            REINDEX_TABLE,
            *ACCOUNT_TABLES,
            *AUDIT_TABLES,
            *OAUTH_TABLES,
            *BULK_TABLES,
            *ML_TABLES,
            *TELEHEALTH_TABLES,
        ]
    )
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        # The audit tables refuse TRUNCATE through triggers; replica mode skips triggers.
        conn.execute("SET session_replication_role = replica")
        conn.execute(f"TRUNCATE {tables} RESTART IDENTITY")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A migrated, empty store; the test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'carebase.db'}")
        s.migrate()
        yield s
        s.close()
    else:
        pg = request.getfixturevalue("_pg_store")
        postgres_url = request.getfixturevalue("postgres_url")
        _truncate(postgres_url)
        yield pg
        _truncate(postgres_url)


@pytest.fixture(scope="session")
def _signing_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One token signing key ring for the session (making an RSA key costs ~0.1-0.4 s)."""
    keys = tmp_path_factory.mktemp("signing") / "keys"
    KeyRing.open(keys)
    return keys


@pytest.fixture
def settings(tmp_path: Path, _signing_keys: Path) -> Settings:
    """Settings pointing the data directory at a temporary folder (holding a copy of the
    session's signing keys, so apps need not generate their own)."""
    data = tmp_path / "data"
    shutil.copytree(_signing_keys, data / "keys")
    return Settings(data_dir=data, base_url="http://testserver/fhir")


@pytest.fixture(scope="session")
def synthea_tar() -> Path:
    """The Synthea R4 sample (../shared/data); tests needing it skip, saying so, when absent."""
    if not SYNTHEA_TAR.exists():
        pytest.skip(f"Synthea sample not found at {SYNTHEA_TAR}")
    return SYNTHEA_TAR
