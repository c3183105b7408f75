"""Fixtures of the command-line tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import quote

import psycopg
import pytest


@pytest.fixture
def fresh_pg_url(postgres_url: str) -> Iterator[str]:
    """A URL whose search_path is a new, empty schema (dropped afterwards)."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        row = conn.execute("SELECT current_schema()").fetchone()
        assert row is not None
        session_schema = row[0]
        schema = f"cli_{uuid.uuid4().hex[:10]}"
        conn.execute(f"CREATE SCHEMA {schema}")
    old = quote(f"-csearch_path={session_schema}")
    assert old in postgres_url
    yield postgres_url.replace(old, quote(f"-csearch_path={schema}"))
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
