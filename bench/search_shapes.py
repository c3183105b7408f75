"""Other SQL shapes for the benchmark's searches, timed as raw SQL on the same databases.

Index rows exist only for current, non-deleted resources (the store deletes a row's index
entries when it is updated or deleted), and a parameter key implies the resource type. So
the matching row ids, their order and their count can come from the index tables alone,
with `resource` read only for the 20 bodies of the page. These shapes show what the
query classes cost written that way (what the search engine could run); they are
evidence for the engine's authors, not what the store runs today. Each timed query is:
ids of one page (keyset: `rid > cursor`), the bodies of those ids, and the total.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from search_plans import explain, full_scans

from carebase.store.schema import param_key

LOINC = "http://loinc.org"
_BODIES = (
    "SELECT rid, type, id, version, last_updated, deleted, body FROM resource WHERE rid IN ({})"
)
_DATE_GE = "((d.hi IS NULL OR d.hi > ?) OR (d.lo >= ? AND d.hi <= ?))"


@dataclass
class Shape:
    """One query class written another way: ids SQL (with `{after}` for the cursor), count."""

    key: str
    label: str
    ids_sql: str
    count_sql: str | None
    args: list[list[Any]]
    pages: int = 1
    samples: list[float] = field(default_factory=list)


def shapes(
    codes: list[str], patients: list[str], families: list[str], ge2015: tuple[int, int]
) -> list[Shape]:
    """The token, patient-scoped, chained and _revinclude classes as index-first SQL."""
    lo, hi = ge2015
    token = "FROM idx_token WHERE pkey = ? AND code = ? AND system = ?"
    scoped = (
        "FROM idx_reference x WHERE x.pkey = ? AND x.target_id = ? AND x.target_type = 'Patient'"
        f" AND EXISTS (SELECT 1 FROM idx_date d WHERE d.rid = x.rid AND d.pkey = ? AND {_DATE_GE})"
    )
    chained = (
        "FROM idx_reference x WHERE x.pkey = ? AND x.target_type = 'Patient' AND x.target_id IN"
        " (SELECT r.id FROM resource r WHERE r.type = 'Patient' AND r.rid IN"
        " (SELECT s.rid FROM idx_string s WHERE s.pkey = ? AND s.norm LIKE ?))"
    )
    subject = param_key("Observation", "subject")
    return [
        Shape(
            "token",
            "token: ids from idx_token (keyset), bodies by rid, COUNT on idx_token",
            f"SELECT DISTINCT rid {token} AND rid > ? ORDER BY rid LIMIT 21",
            f"SELECT COUNT(DISTINCT rid) {token}",
            [[param_key("Observation", "code"), c, LOINC] for c in codes],
            pages=max(1, -(-len(patients) // len(codes))),
        ),
        Shape(
            "patient",
            "patient-scoped: idx_reference with EXISTS on idx_date (by rid)",
            f"SELECT DISTINCT x.rid {scoped} AND x.rid > ? ORDER BY x.rid LIMIT 21",
            f"SELECT COUNT(DISTINCT x.rid) {scoped}",
            [[subject, p, param_key("Observation", "date"), hi, lo, hi] for p in patients],
        ),
        Shape(
            "chained",
            "chained: idx_reference.target_id IN (Patient ids whose family matches)",
            f"SELECT DISTINCT x.rid {chained} AND x.rid > ? ORDER BY x.rid LIMIT 21",
            f"SELECT COUNT(DISTINCT x.rid) {chained}",
            [[subject, param_key("Patient", "family"), f"{f.lower()}%"] for f in families],
        ),
        Shape(
            "revinclude",
            "_revinclude: the Patient, then every Observation whose subject it is",
            "SELECT rid FROM resource WHERE type = 'Patient' AND id = ? AND rid > ?"
            " UNION ALL SELECT DISTINCT rid FROM idx_reference WHERE pkey = ? AND target_id = ?"
            " AND target_type = 'Patient' AND rid > ?",
            None,
            [[p, subject, p] for p in patients],
        ),
    ]


@contextmanager
def _cursor(url: str) -> Iterator[tuple[Any, Callable[[str], str]]]:
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            yield conn.cursor(), lambda sql: sql
        finally:
            conn.close()
    else:
        with psycopg.connect(url, autocommit=True) as pg:
            yield pg.cursor(), lambda sql: sql.replace("?", "%s")


def _args_with_cursor(shape: Shape, args: list[Any], after: int) -> list[Any]:
    if shape.key == "revinclude":  # the cursor goes after each part of the union
        return [args[0], after, args[1], args[2], after]
    return [*args, after]


def run_shapes(url: str, shape_list: list[Shape], budget_s: float) -> list[dict[str, Any]]:
    """Time each shape (ids page, bodies, count); `budget_s` seconds at most per shape."""
    out = []
    with _cursor(url) as (cur, q):
        for shape in shape_list:
            deadline = time.monotonic() + budget_s
            for args in shape.args:
                after = 0
                for _page in range(shape.pages):
                    start = time.perf_counter()
                    rows = cur.execute(
                        q(shape.ids_sql), _args_with_cursor(shape, args, after)
                    ).fetchall()
                    page = [r[0] for r in (rows if shape.key == "revinclude" else rows[:20])]
                    if page:
                        marks = ", ".join("?" * len(page))
                        cur.execute(q(_BODIES.format(marks)), page).fetchall()
                    if shape.count_sql:
                        cur.execute(q(shape.count_sql), args).fetchone()
                    shape.samples.append((time.perf_counter() - start) * 1000)
                    if len(rows) <= 20 or shape.key == "revinclude":
                        break
                    after = rows[19][0]
                if time.monotonic() > deadline:
                    break
            out.append({"key": shape.key, "label": shape.label, "samples": shape.samples})
    return out


def shape_plans(url: str, shape_list: list[Shape]) -> list[dict[str, Any]]:
    """The plans of each shape's first page of ids and its count, like `plans_for`'s."""
    pg = not url.startswith("sqlite:///")
    out: list[dict[str, Any]] = []
    for shape in shape_list:
        args = shape.args[len(shape.args) // 2]
        statements = [(shape.ids_sql, _args_with_cursor(shape, args, 0))]
        if shape.count_sql:
            statements.append((shape.count_sql, args))
        explained = []
        for sql, sql_args in statements:
            text = sql.replace("?", "%s") if pg else sql
            plan = explain(url, text, tuple(sql_args))
            explained.append(
                {"sql": text, "args": [str(a) for a in sql_args], "plan": plan,
                 "scans": full_scans(plan)}
            )  # fmt: skip
        out.append(
            {"key": f"index-first {shape.key}", "query": shape.label, "statements": explained}
        )
    return out
