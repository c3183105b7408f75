"""Writes inside one database transaction: versions, tombstones and index rows.

Writes are buffered and sent in bulk (`executemany` on SQLite, `COPY` on PostgreSQL, see
`write_rows`), and flushed before any read inside the transaction, so a 1,000-entry Bundle
costs a handful of statements rather than tens of thousands.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from carebase.errors import Conflict, PreconditionFailed
from carebase.fhir import json_io
from carebase.store.base import StoredResource, Transaction
from carebase.store.body_cipher import BodyCipher, open_body
from carebase.store.clock import ms_to_datetime, ms_to_instant, now_ms
from carebase.store.ids import new_id
from carebase.store.index_rows import IndexRows
from carebase.store.index_values import SHORT_TEXT_CHARS, index_text
from carebase.store.prepared_index import PreparedIndex
from carebase.store.schema import INDEX_TABLES, REINDEX_TABLE, TEXT_TABLE, param_key
from carebase.store.search_restriction import Restriction
from carebase.store.search_sql import build_search
from carebase.store.sql_rows import row_to_stored
from carebase.store.text_index import TextDocument, text_document

#: Columns of every table written in bulk, in the order buffered rows hold them.
COLUMNS: dict[str, tuple[str, ...]] = {
    "resource": ("rid", "type", "id", "version", "last_updated", "deleted", "body"),
    "resource_version": ("rid", "type", "id", "version", "last_updated", "interaction", "body"),
    "idx_token": ("rid", "pkey", "system", "code", "text"),
    "idx_string": ("rid", "pkey", "norm", "exact"),
    "idx_date": ("rid", "pkey", "lo", "hi"),
    "idx_number": ("rid", "pkey", "value", "lo", "hi"),
    "idx_quantity": ("rid", "pkey", "system", "code", "unit", "value", "lo", "hi"),
    "idx_uri": ("rid", "pkey", "uri"),
    "idx_reference": ("rid", "pkey", "target_type", "target_id", "target_version", "url"),
    "idx_composite": ("rid", "pkey", "key"),
    TEXT_TABLE: ("rid", "narrative", "content"),
}
_ROW_FIELDS = {
    "idx_token": "token",
    "idx_string": "string",
    "idx_date": "date",
    "idx_number": "number",
    "idx_quantity": "quantity",
    "idx_uri": "uri",
    "idx_reference": "reference",
    "idx_composite": "composite",
}
#: Positions (in an IndexRows tuple) of the text values searched by equality or prefix, which
#: are capped by `index_text` so no value outgrows a btree entry. Token `text` (display) is
#: in no btree index and only ever searched with `LIKE '%...%'` (:text), so it stays whole.
_CAPPED: dict[str, tuple[int, ...]] = {
    "idx_token": (1, 2),
    "idx_string": (1, 2),
    "idx_quantity": (1, 2, 3),
    "idx_uri": (1,),
    "idx_reference": (1, 2, 3, 4),
    "idx_composite": (1,),
}
_FLUSH_AT = 20_000
_READ_CHUNK = 500  # ids per `read_many` query (SQLite allows 32,766 parameters)


def _capped(row: tuple[Any, ...], capped: tuple[int, ...]) -> tuple[Any, ...]:
    """A buffered index row (rid, pkey, *values) with its `capped` values through
    `index_text` (positions as in the IndexRows tuple, whose param became rid and pkey)."""
    out = list(row)
    for at in capped:
        if out[at + 1] is not None:
            out[at + 1] = index_text(out[at + 1])
    return tuple(out)  # buffered rows before an automatic flush (bounds memory on huge bundles)


def stamp(resource: dict[str, Any], type_: str, id_: str, version: int, ms: int) -> dict[str, Any]:
    """The resource with id and meta.versionId/lastUpdated set, keys in FHIR's usual order."""
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = ms_to_instant(ms)
    out: dict[str, Any] = {"resourceType": type_, "id": id_, "meta": meta}
    for key, value in resource.items():
        if key not in out:
            out[key] = value
    return out


class SqlTransaction(Transaction):
    """Transaction over a write cursor; see module docstring for the buffering rules."""

    #: seals bodies as they are written and opens them as they are read (set by the store)
    cipher: BodyCipher | None = None

    def __init__(
        self,
        cur: Any,
        q: Callable[[str], str],
        indexer: Callable[[dict[str, Any]], IndexRows],
        *,
        lock_suffix: str = "",
        duplicate_errors: tuple[type[Exception], ...] = (),
    ) -> None:
        self._cur = cur
        self._q = q
        self._index = indexer
        self._lock_suffix = lock_suffix  # " FOR UPDATE" on PostgreSQL
        self._duplicate_errors = duplicate_errors  # the driver's unique-violation error
        self._resources: list[tuple[Any, ...]] = []  # only when rids are pre-allocated
        self._versions: list[tuple[Any, ...]] = []
        self._archived: list[tuple[Any, ...]] = []  # (body, type, id, version) to keep
        self._index_rows: dict[str, list[tuple[Any, ...]]] = {t: [] for t in INDEX_TABLES}
        self._index_rows[TEXT_TABLE] = []
        self._stale_rids: list[tuple[int]] = []
        self._pending = 0

    @property
    def cursor(self) -> Any:
        """The write cursor, for the store's record modules (accounts) to join this unit of
        work; flush first so their statements see (and follow) this transaction's writes."""
        self.flush()
        return self._cur

    # --- reads (flush first so they see this transaction's writes) ----------------------------
    def _current_row(self, type_: str, id_: str, lock: bool) -> tuple[Any, ...] | None:
        self.flush()
        sql = (
            "SELECT rid, version, last_updated, deleted, body FROM resource"
            " WHERE type = ? AND id = ?"
        )
        row = self._cur.execute(self._q(sql + (self._lock_suffix if lock else "")), (type_, id_))
        return row.fetchone()

    def read(self, type_: str, id_: str) -> StoredResource | None:
        row = self._current_row(type_, id_, lock=False)
        if row is None:
            return None
        _rid, version, last_updated, deleted, body = row
        return row_to_stored((type_, id_, version, last_updated, deleted, body), self.cipher)

    def read_many(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], StoredResource]:
        # One query per type and chunk of ids: a 500-resource batch of an import costs a
        # handful of round trips instead of 500 (the ids of one type share the btree range).
        self.flush()
        by_type: dict[str, list[str]] = {}
        for type_, id_ in keys:
            by_type.setdefault(type_, []).append(id_)
        found: dict[tuple[str, str], StoredResource] = {}
        for type_, ids in by_type.items():
            unique = list(dict.fromkeys(ids))
            for at in range(0, len(unique), _READ_CHUNK):
                for id_, version, last_updated, deleted, body in self._read_chunk(
                    type_, unique[at : at + _READ_CHUNK]
                ):
                    found[(type_, id_)] = row_to_stored(
                        (type_, id_, version, last_updated, deleted, body), self.cipher
                    )
        return found

    def _read_chunk(self, type_: str, ids: list[str]) -> list[Any]:
        """(id, version, last_updated, deleted, body) of the stored `ids` of `type_`."""
        sql = (
            "SELECT id, version, last_updated, deleted, body FROM resource"
            f" WHERE type = ? AND id IN ({', '.join('?' * len(ids))})"
        )
        rows: list[Any] = self._cur.execute(self._q(sql), (type_, *ids)).fetchall()
        return rows

    def search_ids(
        self,
        type_: str,
        params: list[tuple[str, str]],
        *,
        limit: int | None = None,
        restriction: Restriction | None = None,
    ) -> list[str]:
        self.flush()
        postgres = bool(self._lock_suffix)  # only PostgreSQL locks rows with FOR UPDATE
        criteria = build_search(
            type_,
            params,
            dialect="postgresql" if postgres else "sqlite",
            restriction=restriction,
        )
        where, args = criteria.where, criteria.args
        sql = f"SELECT id FROM resource WHERE {' AND '.join(where)} ORDER BY rid"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [row[0] for row in self._cur.execute(self._q(sql), args).fetchall()]

    # --- writes -------------------------------------------------------------------------------
    def create(
        self,
        type_: str,
        resource: dict[str, Any],
        id_: str | None = None,
        *,
        prepared: PreparedIndex | None = None,
    ) -> StoredResource:
        # No existence check: the unique (type, id) index refuses a duplicate, which saves a
        # flush and a round trip per entry when a transaction creates thousands of resources.
        return self._write(type_, id_ or new_id(), resource, None, "create", prepared)

    def update(
        self,
        type_: str,
        id_: str,
        resource: dict[str, Any],
        *,
        if_match: int | None = None,
    ) -> tuple[StoredResource, bool]:
        row = self._current_row(type_, id_, lock=True)
        if if_match is not None and (row is None or row[1] != if_match):
            have = f"version {row[1]}" if row is not None else "no resource"
            raise PreconditionFailed(
                f"If-Match asked for version {if_match} of {type_}/{id_} but the server has "
                f"{have}; read the resource again and retry",
                location="If-Match",
            )
        created = row is None or bool(row[3])
        stored = self._write(type_, id_, resource, row, "create" if row is None else "update")
        return stored, created

    def delete(self, type_: str, id_: str, *, if_match: int | None = None) -> StoredResource | None:
        row = self._current_row(type_, id_, lock=True)
        if if_match is not None and (row is None or row[1] != if_match):
            raise PreconditionFailed(
                f"If-Match asked for version {if_match} of {type_}/{id_} but the server has "
                f"{'version ' + str(row[1]) if row else 'no resource'}",
                location="If-Match",
            )
        if row is None or row[3]:
            return None
        rid, version = row[0], row[1] + 1
        ms = now_ms()
        self._cur.execute(
            self._q(
                "UPDATE resource SET version = ?, last_updated = ?, deleted = 1, body = NULL"
                " WHERE rid = ?"
            ),
            (version, ms, rid),
        )
        self._stale_rids.append((rid,))
        self._archive(row, type_, id_)
        self._versions.append((rid, type_, id_, version, ms, "delete", None))
        self._bump(1)
        return StoredResource(type_, id_, version, ms_to_datetime(ms), True, None, "delete")

    def _write(
        self,
        type_: str,
        id_: str,
        resource: dict[str, Any],
        row: tuple[Any, ...] | None,
        interaction: str,
        prepared: PreparedIndex | None = None,
    ) -> StoredResource:
        version = 1 if row is None else row[1] + 1
        ms = now_ms()
        stamped = stamp(resource, type_, id_, version, ms)
        resource.clear()
        resource.update(stamped)
        body = json_io.dumps(stamped)
        # The current row and, once archived, its version row hold the same sealed bytes:
        # both are bound to (type, id, version).
        stored = body if self.cipher is None else self.cipher.seal(body, type_, id_, version)
        if row is None:
            rid = self._insert_resource(type_, id_, version, ms, stored)
        else:
            rid = row[0]
            self._cur.execute(
                self._q(
                    "UPDATE resource SET version = ?, last_updated = ?, deleted = 0, body = ?"
                    " WHERE rid = ?"
                ),
                (version, ms, stored, rid),
            )
            self._stale_rids.append((rid,))
            self._archive(row, type_, id_)
        # The current version's body lives in `resource` only; `_archive` copies it into its
        # version row when a newer version replaces it (creates write each body once).
        self._versions.append((rid, type_, id_, version, ms, interaction, None))
        self._add_index_rows(rid, type_, stamped, prepared)
        return StoredResource(
            type_,
            id_,
            version,
            ms_to_datetime(ms),
            False,
            body,
            interaction,  # type: ignore[arg-type]
        )

    def _archive(self, row: tuple[Any, ...], type_: str, id_: str) -> None:
        """Keep the body of the version `row` is at, now that it stops being current."""
        _rid, version, _ms, deleted, body = row
        if not deleted and body is not None:
            self._archived.append((body, type_, id_, version))

    def _insert_resource(self, type_: str, id_: str, version: int, ms: int, body: bytes) -> int:
        rid = self.allocate_rid()
        if rid is not None:
            # Buffered: a duplicate id surfaces at flush time as a Conflict.
            self._resources.append((rid, type_, id_, version, ms, 0, body))
            return rid
        try:
            cur = self._cur.execute(
                self._q(
                    "INSERT INTO resource (type, id, version, last_updated, deleted, body)"
                    " VALUES (?, ?, ?, ?, 0, ?) RETURNING rid"
                ),
                (type_, id_, version, ms, body),
            )
        except self._duplicate_errors as exc:
            raise Conflict(
                f"{type_}/{id_} already exists (or existed and was deleted); use PUT to update it",
                location=f"{type_}.id",
            ) from exc
        return int(cur.fetchone()[0])

    def _add_index_rows(
        self, rid: int, type_: str, resource: dict[str, Any], prepared: PreparedIndex | None = None
    ) -> None:
        """Buffer the search index rows and the full-text row of one resource (`prepared`:
        computed ahead from the same content)."""
        if prepared is None:
            rows, document = self._index(resource), text_document(resource)
        else:
            rows, document = prepared.rows, prepared.text
        added = 0
        if document is not None:
            self._index_rows[TEXT_TABLE].append(self.text_row(rid, document))
            added = 1
        for table, field_name in _ROW_FIELDS.items():
            values = getattr(rows, field_name)
            if not values:
                continue
            buffer = self._index_rows[table]
            capped = _CAPPED.get(table, ())
            for value in values:
                row = (rid, param_key(type_, value[0]), *value[1:])
                for at in capped:  # a length test per value; capping itself is rare
                    text = value[at]
                    if text is not None and len(text) > SHORT_TEXT_CHARS:
                        row = _capped(row, capped)
                        break
                buffer.append(row)
            added += len(values)
        self._bump(added + 1)

    def _bump(self, n: int) -> None:
        self._pending += n
        if self._pending >= _FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        """Send buffered resource, version and index rows to the database."""
        if not self._pending and not self._stale_rids and not self._archived:
            return
        if self._stale_rids:
            for table in INDEX_TABLES:
                self._cur.executemany(
                    self._q(f"DELETE FROM {table} WHERE rid = ?"), self._stale_rids
                )
            self._cur.executemany(
                self._q(f"DELETE FROM {TEXT_TABLE} WHERE {self.text_key} = ?"), self._stale_rids
            )
            self._stale_rids = []
        if self._resources:
            try:
                self.write_rows("resource", self._resources)
            except self._duplicate_errors as exc:
                raise Conflict(
                    "A resource created in this transaction has an id that already exists",
                    location="id",
                ) from exc
            self._resources = []
        if self._archived:
            self._cur.executemany(
                self._q(
                    "UPDATE resource_version SET body = ? WHERE type = ? AND id = ? AND version = ?"
                ),
                self._archived,
            )
            self._archived = []
        if self._versions:
            self.write_rows("resource_version", self._versions)
            self._versions = []
        for table, buffer in self._index_rows.items():
            if buffer:
                self.write_rows(table, buffer)
                self._index_rows[table] = []
        self._pending = 0

    def write_rows(self, table: str, rows: list[tuple[Any, ...]]) -> None:
        """Insert many rows into `table` (columns as in COLUMNS); backends may do it faster."""
        columns = self.columns(table)
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        self._cur.executemany(self._q(sql), rows)

    def allocate_rid(self) -> int | None:
        """A fresh resource row id, or None when the database assigns it on INSERT."""
        return None

    # --- the full-text table: how each backend keys and spells its rows ----------------------
    #: the column of the text table holding the resource's rid (FTS5 tables key by `rowid`)
    text_key = "rid"

    def columns(self, table: str) -> tuple[str, ...]:
        """The columns rows of `table` are buffered with (COLUMNS, with the text key)."""
        columns = COLUMNS[table]
        return (self.text_key, *columns[1:]) if table == TEXT_TABLE else columns

    def text_row(self, rid: int, document: TextDocument) -> tuple[Any, ...]:
        """The text table row of a resource: its words separated by spaces (for FTS5)."""
        return rid, " ".join(document.narrative), " ".join(document.content)

    # --- rebuilding index rows (`carebase reindex`) ------------------------------------------
    def reindex_after(self, after: int, limit: int) -> tuple[int, int] | None:
        """Rebuild the index rows of the next `limit` resource rows with rid > `after`.

        Every row's old index rows are deleted; current versions get fresh ones (tombstones
        none). Returns (last rid done, current resources reindexed), or None when no row is
        left. The rows are locked on PostgreSQL, so a concurrent update cannot interleave.
        """
        rows = self._cur.execute(
            self._q(
                "SELECT rid, type, id, version, deleted, body FROM resource WHERE rid > ?"
                f" ORDER BY rid LIMIT ?{self._lock_suffix}"
            ),
            (after, limit),
        ).fetchall()
        if not rows:
            return None
        current = 0
        for rid, type_, id_, version, deleted, body in rows:
            self._stale_rids.append((rid,))
            if not deleted and body is not None:
                plain = open_body(bytes(body), type_, id_, version, self.cipher)
                self._add_index_rows(rid, type_, json_io.loads(plain))
                current += 1
        self.flush()
        return int(rows[-1][0]), current

    def reindex_progress(self) -> int | None:
        """The last rid an unfinished `carebase reindex` committed, or None."""
        row = self._cur.execute(f"SELECT last_rid FROM {REINDEX_TABLE} WHERE id = 1").fetchone()
        return None if row is None else int(row[0])

    def set_reindex_progress(self, last_rid: int | None) -> None:
        """Record how far a reindex got (in its batch's transaction); None when it is done."""
        self._cur.execute(f"DELETE FROM {REINDEX_TABLE} WHERE id = 1")
        if last_rid is not None:
            self._cur.execute(
                self._q(f"INSERT INTO {REINDEX_TABLE} (id, last_rid) VALUES (1, ?)"), (last_rid,)
            )

    def current_count(self, after: int = 0) -> int:
        """How many current (not deleted) resources have rid > `after`."""
        row = self._cur.execute(
            self._q("SELECT COUNT(*) FROM resource WHERE deleted = 0 AND rid > ?"), (after,)
        ).fetchone()
        return int(row[0])
