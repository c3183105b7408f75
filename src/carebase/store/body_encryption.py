"""Which key seals each stored body, and resealing bodies with the active key (rotation).

`carebase encryption status` and `rotate` use these. Rows are told apart by their first
bytes (`body_cipher.PREFIX_BYTES`: MAGIC and key id), read and compared in SQL, so status
never transfers bodies and rotation only transfers the rows it changes. Resealing goes in
batches, each one short write transaction (rows locked on PostgreSQL, so a concurrent update
of the same resource waits): an interrupted rotation resumes by running it again, because
rows already under the active key are no longer selected.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from carebase.errors import StorageError
from carebase.store.base import Store
from carebase.store.body_cipher import MAGIC, PREFIX_BYTES, BodyCipher, open_body, sealed_prefix
from carebase.store.sql_store import SqlStore

#: The tables holding bodies, and the column that orders their rows.
BODY_TABLES = {"resource": "rid", "resource_version": "seq"}
PLAINTEXT = "plaintext"


def _sql_store(store: Store) -> SqlStore:
    if not isinstance(store, SqlStore):
        raise StorageError("This store does not support encryption at rest")
    return store


def key_usage(store: Store) -> dict[str, Counter[str]]:
    """Per body table: how many bodies each key id seals, and how many are plaintext."""
    sql_store = _sql_store(store)
    usage: dict[str, Counter[str]] = {}
    with sql_store.reading() as cur:
        for table in BODY_TABLES:
            rows = cur.execute(
                f"SELECT substr(body, 1, {PREFIX_BYTES}), COUNT(*) FROM {table}"
                " WHERE body IS NOT NULL GROUP BY 1"
            ).fetchall()
            counts: Counter[str] = Counter()
            for prefix, count in rows:
                head = bytes(prefix)
                kid = head[len(MAGIC) :].decode("ascii", "replace")
                counts[kid if head[: len(MAGIC)] == MAGIC else PLAINTEXT] += int(count)
            usage[table] = counts
    return usage


def count_to_reseal(store: Store, kid: str) -> int:
    """Bodies (both tables) not sealed with key `kid`: plaintext or under another key."""
    sql_store = _sql_store(store)
    total = 0
    with sql_store.reading() as cur:
        for table in BODY_TABLES:
            row = cur.execute(
                sql_store.q(
                    f"SELECT COUNT(*) FROM {table}"
                    f" WHERE body IS NOT NULL AND substr(body, 1, {PREFIX_BYTES}) <> ?"
                ),
                (sealed_prefix(kid),),
            ).fetchone()
            total += int(row[0])
    return total


@dataclass(frozen=True, slots=True)
class ResealedBatch:
    """One committed batch: the last row key it reached and how many bodies it resealed."""

    last: int
    resealed: int


def reseal_batch(store: Store, table: str, after: int, limit: int) -> ResealedBatch | None:
    """Reseal with the store's active key the next `limit` bodies of `table` (row key >
    `after`) that are plaintext or under another key; None when none is left.

    Each body is opened (with any key of the ring; a body that fails authentication stops the
    rotation with a StorageError naming it) and sealed again, bound to the same row.
    """
    sql_store = _sql_store(store)
    cipher = sql_store.cipher
    if cipher is None:
        raise StorageError("No encryption key is configured (CAREBASE_ENCRYPTION_KEY_FILE)")
    key = BODY_TABLES[table]
    lock = " FOR UPDATE" if sql_store.dialect == "postgresql" else ""
    with sql_store.writing() as cur:
        rows = cur.execute(
            sql_store.q(
                f"SELECT {key}, type, id, version, body FROM {table}"
                f" WHERE {key} > ? AND body IS NOT NULL AND substr(body, 1, {PREFIX_BYTES}) <> ?"
                f" ORDER BY {key} LIMIT ?{lock}"
            ),
            (after, sealed_prefix(cipher.active_id), limit),
        ).fetchall()
        if not rows:
            return None
        updates = [
            (_resealed(cipher, bytes(body), type_, id_, version), row_key)
            for row_key, type_, id_, version, body in rows
        ]
        cur.executemany(sql_store.q(f"UPDATE {table} SET body = ? WHERE {key} = ?"), updates)
    return ResealedBatch(int(rows[-1][0]), len(rows))


def _resealed(cipher: BodyCipher, body: bytes, type_: str, id_: str, version: int) -> bytes:
    return cipher.seal(open_body(body, type_, id_, version, cipher), type_, id_, version)
