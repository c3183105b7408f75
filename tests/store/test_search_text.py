"""Full-text search (`_text`, `_content`) on both databases: syntax, folding, writes, reindex.

`text_condition` is called directly and its SQL run over `resource`, as the search engine does.
On Synthea data, queries drawn from the stored words (hypothesis) must match exactly the
resources a brute-force evaluation over the extracted words finds, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carebase.errors import BadRequest
from carebase.store import reindex
from carebase.store.base import Store
from carebase.store.schema import INDEX_TABLES, TEXT_TABLE
from carebase.store.search_sql import split_values
from carebase.store.search_text import parse_value, text_condition
from carebase.store.sql_store import SqlStore
from carebase.store.text_index import text_document

DIV = '<div xmlns="http://www.w3.org/1999/xhtml">{}</div>'
EXAMPLES = int(os.environ.get("FTS_EXAMPLES", "60"))


def condition(narrative: str | None, *texts: str) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/p"},
        "code": {"text": texts[0] if texts else "unspecified"},
        "note": [{"text": t} for t in texts[1:]],
    }
    if narrative is not None:
        resource["text"] = {"status": "generated", "div": DIV.format(narrative)}
    return resource


DOCS = {
    "c1": condition("Chronic <b>heart</b> failure, stable", "Congestive heart failure"),
    "c2": condition(None, "Heart murmur", "Failure to thrive noted"),
    "c3": condition("Ménière&#39;s disease", "Vertigo"),
    "c4": condition(None, "DIABETES mellitus type 2", "Café au lait spots"),
    "c5": condition("Asthma attack", "Hay fever; heartburn"),
}


def find(store: Store, code: str, raw: str, type_: str = "Condition") -> list[str]:
    """Ids of current resources of `type_` matching `code=raw` (comma-separated values)."""
    sql_store = cast(SqlStore, store)
    sql, args = text_condition(sql_store.dialect, code, split_values(raw), code)
    query = f"SELECT id FROM resource WHERE deleted = 0 AND type = ? AND {sql} ORDER BY id"
    with sql_store._reading() as cur:
        return [row[0] for row in cur.execute(sql_store.q(query), [type_, *args]).fetchall()]


@pytest.fixture
def loaded(store: Store) -> Store:
    with store.transaction() as tx:
        for id_, resource in DOCS.items():
            tx.update("Condition", id_, dict(resource))
        tx.update("Patient", "p", {"resourceType": "Patient", "name": [{"family": "Heart"}]})
    return store


@pytest.mark.parametrize(
    ("code", "raw", "expected"),
    [
        ("_text", "heart", ["c1"]),  # narrative only: c2's heart is in its code
        ("_content", "heart", ["c1", "c2"]),  # whole words: not c5's heartburn
        ("_content", "heart*", ["c1", "c2", "c5"]),
        ("_content", "heart failure", ["c1", "c2"]),  # AND, anywhere in the text
        ("_content", '"heart failure"', ["c1"]),  # phrase
        ("_content", '"failure heart"', []),
        ("_content", '"congestive hea*"', ["c1"]),  # prefix inside a phrase
        ("_text", "failure stable", ["c1"]),
        ("_text", "vertigo", []),
        ("_content", "vertigo,asthma", ["c3", "c5"]),  # comma: OR
        ("_content", "vertigo,asthma attack,nothing", ["c3", "c5"]),
        ("_content", "MENIERE", ["c3"]),  # accents and case fold both ways
        ("_text", "ménière's", ["c3"]),
        ("_content", "cafe", ["c4"]),
        ("_content", "CAFÉ", ["c4"]),
        ("_content", "diabetes", ["c4"]),
        ("_content", "type-2", ["c4"]),  # punctuated term: a phrase of its words
        ("_content", "2-type", []),
        ("_content", "unspecified", []),
        ("_content", "fever;", ["c5"]),
    ],
)
def test_full_text_matching(loaded: Store, code: str, raw: str, expected: list[str]) -> None:
    assert find(loaded, code, raw) == expected


def test_other_types_stay_out(loaded: Store) -> None:
    assert find(loaded, "_content", "heart", "Patient") == ["p"]


def test_parse_value_clauses() -> None:
    assert parse_value("_text", 'a "b c*" d-e f*') == [
        [("a", False)],
        [("b", False), ("c", True)],
        [("d", False), ("e", False)],
        [("f", True)],
    ]


#: client input that must reach neither FTS5's nor tsquery's syntax
HOSTILE = [
    'heart"', '"', '""', '"heart', 'heart"*', "*heart", "heart**", "heart OR thrive",
    "heart AND NOT failure", "NEAR(heart failure)", "NEAR(heart failure, 0)", "heart:failure",
    "narrative:heart", "content : heart", "{narrative}: heart", "heart & kidney",
    "heart | vertigo", "!heart", "(heart", "heart)", "(heart | vertigo)", "'heart'",
    "heart' | 'vertigo", "heart:*", "heart:* | vertigo:*", "heart <-> failure", "^heart",
    "heart -failure", "+heart", "heart\\", "%", "_", "heart%", "h_art", "\x00heart",
    "heart\x00vertigo", "hea\u0301rt", "-", "*", ":", "&", "|", "!", "()", "'", "\\",
]  # fmt: skip


@pytest.mark.parametrize("code", ["_text", "_content"])
def test_hostile_input_never_errors_or_widens(loaded: Store, code: str) -> None:
    documents = {id_: text_document(loaded_resource) for id_, loaded_resource in DOCS.items()}
    column = "narrative" if code == "_text" else "content"
    for raw in HOSTILE:
        try:
            got = find(loaded, code, raw.replace(",", "\\,"))
        except BadRequest as exc:
            assert code in exc.message and exc.issues[0].expression == [code], raw
            assert not any(c.isalnum() for c in raw.replace("\x00", "")), raw
            continue
        # every word of the value must be in what matched (AND): never more results
        wanted = {w for clause in parse_value(code, raw) for w, _ in clause}
        for id_ in got:
            document = documents[id_]
            assert document is not None
            have = getattr(document, column)
            assert all(any(h.startswith(w) for h in have) for w in wanted), (raw, id_)
        assert got == _brute_force(documents, column, [parse_value(code, raw)]), raw


def _brute_force(documents: dict[str, Any], column: str, values: list[Any]) -> list[str]:
    """Ids whose words match any value: all clauses, each a run of consecutive words."""

    def has(found: tuple[str, ...], clause: list[tuple[str, bool]]) -> bool:
        n = len(clause)
        return any(
            all(
                found[i + j].startswith(w) if prefix else found[i + j] == w
                for j, (w, prefix) in enumerate(clause)
            )
            for i in range(len(found) - n + 1)
        )

    return sorted(
        id_
        for id_, document in documents.items()
        if document is not None
        and any(all(has(getattr(document, column), c) for c in clauses) for clauses in values)
    )


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "no word"),
        ("  ", "no word"),
        ("*", "no word"),
        ('"" ()', "no word"),
        ("a" * 101, "longer than 100"),
        (" ".join(["w"] * 65), "more than 64"),
    ],
)
def test_unsearchable_values_are_refused(loaded: Store, raw: str, why: str) -> None:
    for code in ("_text", "_content"):
        with pytest.raises(BadRequest) as info:
            find(loaded, code, raw)
        assert code in info.value.message and why in info.value.message
        assert f"'{raw}'" in info.value.message and info.value.issues[0].expression == [code]


def _text_rows(store: Store) -> int:
    sql_store = cast(SqlStore, store)
    with sql_store._reading() as cur:
        return int(cur.execute(f"SELECT COUNT(*) FROM {TEXT_TABLE}").fetchone()[0])


def test_update_replaces_and_delete_removes_text_rows(loaded: Store) -> None:
    assert _text_rows(loaded) == len(DOCS) + 1
    with loaded.transaction() as tx:
        tx.update("Condition", "c1", condition("Sprained ankle", "Ankle sprain"))
        tx.update("Condition", "c1", condition("Sprained wrist", "Wrist sprain"))
        tx.delete("Condition", "c3")
    assert find(loaded, "_content", "heart") == ["c2"]
    assert find(loaded, "_content", "ankle") == []
    assert find(loaded, "_text", "wrist") == ["c1"]
    assert find(loaded, "_content", "vertigo") == []
    assert _text_rows(loaded) == len(DOCS)  # c3's row went with it
    with loaded.transaction() as tx:
        tx.update("Condition", "c3", condition(None, "Vertigo again"))
        tx.update("Condition", "c4", {"resourceType": "Condition", "subject": {"reference": "P/p"}})
    assert find(loaded, "_content", "vertigo") == ["c3"]
    assert find(loaded, "_content", "diabetes") == []  # no text left: no row
    assert _text_rows(loaded) == len(DOCS)


def test_failed_transaction_leaves_no_text_rows(loaded: Store) -> None:
    with pytest.raises(RuntimeError), loaded.transaction() as tx:
        tx.update("Condition", "c9", condition(None, "Gout"))
        tx.delete("Condition", "c1")
        tx.flush()  # type: ignore[attr-defined]
        raise RuntimeError("boom")
    assert find(loaded, "_content", "gout") == []
    assert find(loaded, "_text", "chronic") == ["c1"]


def _snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every index row, sorted, per table (the text table's text as written)."""
    sql_store = cast(SqlStore, store)
    text = (
        f"SELECT rowid, narrative, content FROM {TEXT_TABLE}"
        if sql_store.dialect == "sqlite"
        else f"SELECT rid, narrative::text, content::text FROM {TEXT_TABLE}"
    )
    with sql_store._reading() as cur:
        out = {t: sorted(map(tuple, cur.execute(f"SELECT * FROM {t}"))) for t in INDEX_TABLES}
        out[TEXT_TABLE] = sorted(map(tuple, cur.execute(text)))
    return out


def _drop_rows(store: Store) -> None:
    with cast(SqlStore, store)._writing() as cur:
        for table in (*INDEX_TABLES, TEXT_TABLE):
            cur.execute(f"DELETE FROM {table}")


def test_reindex_restores_dropped_rows_and_resumes(loaded: Store) -> None:
    with loaded.transaction() as tx:
        tx.update(
            "Observation",
            "o1",
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": "Patient/p"},
                "effectiveDateTime": "2015-02-07",
                "valueQuantity": {"value": 72, "unit": "/min"},
            },
        )
        tx.delete("Condition", "c5")
    before = _snapshot(loaded)
    assert all(before[t] for t in ("idx_token", "idx_date", "idx_quantity", TEXT_TABLE))
    _drop_rows(loaded)
    assert not any(_snapshot(loaded).values())
    assert find(loaded, "_content", "vertigo") == []
    assert reindex.reindex(loaded, batch_size=2) == len(DOCS) + 1  # c5 deleted, o1 added
    assert _snapshot(loaded) == before
    assert find(loaded, "_content", "vertigo") == ["c3"]
    assert reindex.reindex(loaded) == len(DOCS) + 1  # idempotent
    assert _snapshot(loaded) == before

    # resume: a run that stopped after some row goes on from there
    sql_store = cast(SqlStore, loaded)
    with sql_store._reading() as cur:
        rids = [r[0] for r in cur.execute("SELECT rid FROM resource ORDER BY rid").fetchall()]
    _drop_rows(loaded)
    with loaded.transaction() as tx:
        tx.set_reindex_progress(rids[2])  # type: ignore[attr-defined]
    begin = reindex.start(loaded)
    assert begin.resumed and begin.after == rids[2]
    assert reindex.reindex(loaded) == begin.remaining == len(rids) - 3 - 1  # c5 deleted
    assert reindex.start(loaded).after == 0  # done: no progress left behind
    partial = _snapshot(loaded)
    assert all(r[0] > rids[2] for rows in partial.values() for r in rows)
    assert reindex.reindex(loaded, restart=True) == len(DOCS) + 1
    assert _snapshot(loaded) == before


def test_reindex_removes_rows_of_deleted_resources(loaded: Store) -> None:
    before = _snapshot(loaded)
    sql_store = cast(SqlStore, loaded)
    with loaded.transaction() as tx:
        tx.delete("Condition", "c1")
    with sql_store._reading() as cur:
        rid = cur.execute("SELECT rid FROM resource WHERE id = 'c1'").fetchone()[0]
    with sql_store._writing() as cur:  # stale rows, as if left by an older indexer
        for table, rows in before.items():
            for row in rows:
                if row[0] == rid:
                    marks = ", ".join(["?"] * len(row))
                    columns = "rowid, narrative, content" if sql_store.dialect == "sqlite" else ""
                    into = f"{table} ({columns})" if columns and table == TEXT_TABLE else table
                    cur.execute(sql_store.q(f"INSERT INTO {into} VALUES ({marks})"), row)
    assert find(loaded, "_text", "chronic") == []  # deleted: filtered out anyway
    reindex.reindex(loaded)
    assert all(r[0] != rid for rows in _snapshot(loaded).values() for r in rows)


# --- Synthea: queries drawn from stored words equal a brute-force match ------------------------

PATIENT_BUNDLES = 2


def _load_synthea(store: Store, synthea_tar: Path) -> dict[str, dict[str, Any]]:
    """The first patient Bundles, each resource stored under its own id; (type, id) -> resource."""
    stored: dict[str, dict[str, Any]] = {}
    loaded = 0
    with tarfile.open(synthea_tar) as tar:
        for member in tar:
            name = Path(member.name).name
            if not (member.isfile() and name.endswith(".json") and not name[0].islower()):
                continue
            extracted = tar.extractfile(member)
            assert extracted is not None
            bundle = orjson.loads(extracted.read())
            with store.transaction() as tx:
                for entry in bundle["entry"]:
                    resource = entry["resource"]
                    tx.update(resource["resourceType"], resource["id"], resource)
                    stored[f"{resource['resourceType']}/{resource['id']}"] = resource
            loaded += 1
            if loaded == PATIENT_BUNDLES:
                break
    return stored


@st.composite
def _queries(draw: Any, documents: dict[str, Any]) -> tuple[str, str, list[Any]]:
    """(type, query text, the values as clauses of (word, prefix)) from the stored words."""
    key = draw(st.sampled_from(sorted(k for k, d in documents.items() if d is not None)))
    type_ = key.split("/")[0]
    found = documents[key].content
    values, texts = [], []
    for _ in range(draw(st.integers(1, 2))):
        clauses, parts = [], []
        for _ in range(draw(st.integers(1, 3))):
            start = draw(st.integers(0, len(found) - 1))
            run = list(found[start : start + draw(st.integers(1, 3))])
            if draw(st.integers(0, 4)) == 0:  # a word from elsewhere: often no match
                run[-1] = draw(st.sampled_from(["pain", "acute", "2015", "zzz", "medical"]))
            prefix = draw(st.integers(0, 3)) == 0 and len(run[-1]) > 1
            if prefix:
                run[-1] = run[-1][: draw(st.integers(1, len(run[-1]) - 1))]
            clause = [(w, False) for w in run[:-1]] + [(run[-1], prefix)]
            shown = " ".join(run) + ("*" if prefix else "")
            if draw(st.booleans()):  # the stored case and accents, as a client would type
                shown = shown.upper()
            clauses.append(clause)
            parts.append(f'"{shown}"' if len(run) > 1 else shown)
        values.append(clauses)
        texts.append(" ".join(parts))
    return type_, ",".join(texts), values


def test_synthea_content_equals_brute_force(store: Store, synthea_tar: Path) -> None:
    stored = _load_synthea(store, synthea_tar)
    documents = {key: text_document(resource) for key, resource in stored.items()}

    # a condition's display text finds the condition (and what else mentions it)
    cond = next(r for r in stored.values() if r["resourceType"] == "Condition")
    display = cond["code"]["coding"][0]["display"]
    assert cond["id"] in find(store, "_content", f'"{display}"', "Condition")
    assert cond["id"] not in find(store, "_text", f'"{display}"', "Condition")  # no narrative
    patient = next(r for r in stored.values() if r["resourceType"] == "Patient")
    assert find(store, "_text", "synthea", "Patient") == sorted(
        r["id"] for r in stored.values() if r["resourceType"] == "Patient"
    )
    assert patient["id"] in find(store, "_content", patient["name"][0]["family"], "Patient")

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(_queries(documents))
    def run(query: tuple[str, str, list[Any]]) -> None:
        type_, text, values = query
        of_type = {k.split("/")[1]: d for k, d in documents.items() if k.startswith(type_ + "/")}
        for code, column in (("_content", "content"), ("_text", "narrative")):
            got = find(store, code, text, type_)
            assert got == _brute_force(of_type, column, values), f"{type_}?{code}={text}"
            outcomes.add((code, len(got) > 1 if got else None))

    outcomes: set[tuple[str, bool | None]] = set()
    run()
    # the draws reached no match, one match and several, for both parameters
    assert outcomes >= {("_content", None), ("_content", False), ("_content", True)}, outcomes
    assert ("_text", None) in outcomes and {("_text", False), ("_text", True)} & outcomes
