"""Versioned schema migrations for SQLite and PostgreSQL (a numbered list, applied in order).

Each migration is a list of DDL statements per dialect. `schema_migrations` records what has
been applied; `migrate()` applies the rest in one transaction each. Never edit a migration that
has shipped: add a new one.

Index tables are keyed by `rid` (the resource row) and `pkey`, a stable 32-bit hash of
"Type.code" of the search parameter (see `param_key`): compact rows, no join to a parameter
table, and the resource type is implied by the key.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache

from carebase.store.oauth_schema import oauth_ddl


@lru_cache(maxsize=65536)
def param_key(resource_type: str, code: str) -> int:
    """The stable integer key of a search parameter in the index tables."""
    return zlib.crc32(f"{resource_type}.{code}".encode()) - 2**31


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: its number, a description, and DDL per dialect."""

    number: int
    description: str
    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]
    #: it adds index rows that resources stored before it lack (`carebase reindex` fills them)
    needs_reindex: bool = False


def _both(template: str) -> tuple[str, str]:
    """One DDL statement in SQLite and PostgreSQL spelling (`{id}`, `{blob}`, `{big}`)."""
    sqlite = template.format(id="INTEGER PRIMARY KEY", blob="BLOB", big="INTEGER")
    pg = template.format(id="BIGSERIAL PRIMARY KEY", blob="BYTEA", big="BIGINT")
    return sqlite, pg


_INDEX_TABLES = {
    "idx_token": "system TEXT, code TEXT, text TEXT",
    "idx_string": "norm TEXT NOT NULL, exact TEXT NOT NULL",
    "idx_date": "lo {big}, hi {big}",
    "idx_number": "value DOUBLE PRECISION NOT NULL, lo DOUBLE PRECISION, hi DOUBLE PRECISION",
    "idx_quantity": (
        "system TEXT, code TEXT, unit TEXT, value DOUBLE PRECISION NOT NULL, "
        "lo DOUBLE PRECISION, hi DOUBLE PRECISION"
    ),
    "idx_uri": "uri TEXT NOT NULL",
    "idx_reference": "target_type TEXT, target_id TEXT, target_version TEXT, url TEXT",
    "idx_composite": "key TEXT NOT NULL",
}

# Secondary indexes that make selective searches use an index (beyond the rid index).
_INDEX_LOOKUPS = {
    "idx_token": "pkey, code, system",
    "idx_string": "pkey, norm",
    "idx_date": "pkey, lo, hi",
    "idx_number": "pkey, value",
    "idx_quantity": "pkey, code, value",
    "idx_uri": "pkey, uri",
    "idx_reference": "pkey, target_id, target_type",
    "idx_composite": "pkey, key",
}


def _initial() -> Migration:
    statements: list[tuple[str, str]] = [
        _both(
            "CREATE TABLE resource ("
            " rid {id},"
            " type TEXT NOT NULL,"
            " id TEXT NOT NULL,"
            " version INTEGER NOT NULL,"
            " last_updated {big} NOT NULL,"
            " deleted SMALLINT NOT NULL DEFAULT 0,"
            " body {blob})"
        ),
        _both("CREATE UNIQUE INDEX resource_type_id ON resource (type, id)"),
        _both("CREATE INDEX resource_type_updated ON resource (type, last_updated)"),
        _both(
            "CREATE TABLE resource_version ("
            " seq {id},"
            " rid {big} NOT NULL,"
            " type TEXT NOT NULL,"
            " id TEXT NOT NULL,"
            " version INTEGER NOT NULL,"
            " last_updated {big} NOT NULL,"
            " interaction TEXT NOT NULL,"
            " body {blob})"
        ),
        _both("CREATE UNIQUE INDEX resource_version_key ON resource_version (type, id, version)"),
        _both("CREATE INDEX resource_version_type_seq ON resource_version (type, seq)"),
        _both("CREATE INDEX resource_version_updated ON resource_version (last_updated)"),
    ]
    for table, columns in _INDEX_TABLES.items():
        statements.append(
            _both(f"CREATE TABLE {table} (rid {{big}} NOT NULL, pkey INTEGER NOT NULL, {columns})")
        )
        statements.append(_both(f"CREATE INDEX {table}_rid ON {table} (rid)"))
        statements.append(
            _both(f"CREATE INDEX {table}_lookup ON {table} ({_INDEX_LOOKUPS[table]})")
        )
    return Migration(
        1,
        "resources, versions and search index tables",
        tuple(s for s, _ in statements),
        tuple(p for _, p in statements),
    )


#: The full-text table: one row per resource with text, keyed by its rid (`rowid` in SQLite's
#: FTS5 table), holding the words `store/text_index.py` extracts: `narrative` (`_text`) and
#: `content` (`_content`).
TEXT_TABLE = "idx_text"
#: Progress of an interrupted `carebase reindex` (one row while a run is unfinished).
REINDEX_TABLE = "reindex_progress"


def _full_text() -> Migration:
    # SQLite: a regular FTS5 table (it keeps its own copy of the text), so a row can be
    # deleted by rowid alone; contentless tables need the old text for that (or SQLite 3.43).
    # Words arrive folded and separated by spaces; unicode61 must not fold them further.
    # PostgreSQL: tsvectors built by the repository from the same words (no parser, no
    # dictionary, no extension), with GIN indexes.
    progress = "CREATE TABLE reindex_progress (id INTEGER PRIMARY KEY, last_rid {big} NOT NULL)"
    return Migration(
        2,
        "full-text index for _text and _content; a database that already holds resources "
        "needs `carebase reindex` to fill it",
        (
            "CREATE VIRTUAL TABLE idx_text USING fts5(narrative, content,"
            " tokenize = 'unicode61 remove_diacritics 0', columnsize = 0)",
            _both(progress)[0],
        ),
        (
            "CREATE TABLE idx_text (rid BIGINT PRIMARY KEY,"
            " narrative TSVECTOR NOT NULL, content TSVECTOR NOT NULL)",
            "CREATE INDEX idx_text_narrative ON idx_text USING GIN (narrative)",
            "CREATE INDEX idx_text_content ON idx_text USING GIN (content)",
            _both(progress)[1],
        ),
        needs_reindex=True,
    )


#: Lookup indexes that end in `rid`, so a search reads its matches, their order (keyset
#: paging by rid) and their count from the index alone (measured at one million resources:
#: docs/search-plans.md). PostgreSQL's string index uses text_pattern_ops so `LIKE 'x%'`
#: is an index range under any database collation.
_COVERING_LOOKUPS = {
    "idx_token": ("pkey, code, system, rid", "pkey, code, system, rid"),
    "idx_reference": ("pkey, target_id, target_type, rid", "pkey, target_id, target_type, rid"),
    "idx_date": ("pkey, lo, hi, rid", "pkey, lo, hi, rid"),
    "idx_string": ("pkey, norm, rid", "pkey, norm text_pattern_ops, rid"),
}


def _covering_lookups() -> Migration:
    sqlite: list[str] = []
    postgresql: list[str] = []
    for table, (lite, pg) in _COVERING_LOOKUPS.items():
        for out, columns in ((sqlite, lite), (postgresql, pg)):
            out.append(f"DROP INDEX {table}_lookup")
            out.append(f"CREATE INDEX {table}_lookup ON {table} ({columns})")
    # Codes are far from independent of their parameter (one LOINC code, one parameter): without
    # these statistics PostgreSQL underestimated a common code's rows 100-fold and chose
    # nested loops that took seconds.
    postgresql.append(
        "CREATE STATISTICS idx_token_pkey_code_system (dependencies, mcv)"
        " ON pkey, code, system FROM idx_token"
    )
    postgresql.append("ANALYZE idx_token")  # fills them now on a database that has data
    return Migration(
        3, "search lookup indexes that cover the row id", tuple(sqlite), tuple(postgresql)
    )


#: Login accounts, their one-time recovery codes and browser sessions (`store/accounts.py`).
ACCOUNT_TABLES: tuple[str, ...] = ("users", "user_recovery_codes", "user_sessions")


def _accounts() -> Migration:
    # Times are Unix milliseconds ({big}); flags are SMALLINT 0/1 on both backends.
    statements = [
        _both(
            "CREATE TABLE users ("
            " id TEXT PRIMARY KEY,"
            " username TEXT NOT NULL,"
            " role TEXT NOT NULL,"
            " display_name TEXT,"
            " password_hash TEXT,"
            " fhir_user TEXT,"
            " patient_id TEXT,"
            " organization_id TEXT,"
            " totp_secret TEXT,"
            " totp_pending_secret TEXT,"
            " totp_last_step {big},"
            " disabled SMALLINT NOT NULL DEFAULT 0,"
            " failed_attempts INTEGER NOT NULL DEFAULT 0,"
            " locked_until {big},"
            " created {big} NOT NULL,"
            " updated {big} NOT NULL)"
        ),
        _both("CREATE UNIQUE INDEX users_username ON users (username)"),
        _both(
            "CREATE TABLE user_recovery_codes ("
            " user_id TEXT NOT NULL,"
            " code_hash TEXT NOT NULL,"
            " used {big},"
            " PRIMARY KEY (user_id, code_hash))"
        ),
        _both(
            "CREATE TABLE user_sessions ("
            " token_hash TEXT PRIMARY KEY,"
            " user_id TEXT NOT NULL,"
            " csrf_secret TEXT NOT NULL,"
            " second_factor_pending SMALLINT NOT NULL DEFAULT 0,"
            " created {big} NOT NULL,"
            " last_seen {big} NOT NULL,"
            " idle_expires {big} NOT NULL,"
            " absolute_expires {big} NOT NULL,"
            " revoked SMALLINT NOT NULL DEFAULT 0,"
            " source_ip TEXT,"
            " user_agent TEXT)"
        ),
        _both("CREATE INDEX user_sessions_user ON user_sessions (user_id)"),
    ]
    return Migration(
        4,
        "login accounts, recovery codes and browser sessions",
        tuple(s for s, _ in statements),
        tuple(p for _, p in statements),
    )


def _oauth() -> Migration:
    # The OAuth tables are spelled beside their records module (store/oauth_schema.py).
    return Migration(
        5,
        "OAuth 2.0 / SMART: clients, authorization codes, refresh tokens, revocations, launches",
        oauth_ddl("sqlite"),
        oauth_ddl("postgresql"),
    )


#: The audit log's tables of migration 6 (one row per entry: logs written before migration 10).
AUDIT_ROW_TABLES: tuple[str, ...] = ("audit_log", "audit_patient", "audit_entity")
#: The tables of migration 10 (one row per group-committed block of entries).
AUDIT_BLOCK_TABLES: tuple[str, ...] = ("audit_block", "audit_key")
#: The audit log's tables (written and read only by `store/audit_records.py`).
AUDIT_TABLES: tuple[str, ...] = AUDIT_ROW_TABLES + AUDIT_BLOCK_TABLES


def _append_only(tables: tuple[str, ...], sqlite: list[str], postgresql: list[str]) -> None:
    """Triggers refusing UPDATE and DELETE (and, on PostgreSQL, TRUNCATE) on `tables`."""
    for table in tables:
        for op in ("UPDATE", "DELETE"):
            sqlite.append(
                f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} BEGIN"
                f" SELECT RAISE(ABORT, 'the audit log is append-only: {op} on {table} refused');"
                " END"
            )
        postgresql.append(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION audit_append_only()"
        )
        postgresql.append(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()"
        )


def _audit_log() -> Migration:
    # `seq` is assigned by the appender (last + 1 under its lock), not by a sequence: a gap
    # then means a deleted entry, where a sequence would leave gaps on every rollback.
    # Each table refuses UPDATE and DELETE (and, on PostgreSQL, TRUNCATE) in the database
    # itself; the hash chain is what catches a superuser who drops the triggers first.
    statements = [
        _both(
            "CREATE TABLE audit_log ("
            " seq {big} PRIMARY KEY,"
            " id TEXT NOT NULL UNIQUE,"
            " recorded {big} NOT NULL,"
            " interaction TEXT NOT NULL,"
            " action TEXT NOT NULL,"
            " outcome TEXT NOT NULL,"
            " agent TEXT,"
            " agent_name TEXT,"
            " patients TEXT NOT NULL,"
            " entities TEXT NOT NULL,"
            " break_glass SMALLINT NOT NULL,"
            " event {blob} NOT NULL,"
            " prev_hash TEXT NOT NULL,"
            " hash TEXT NOT NULL)"
        ),
        _both("CREATE INDEX audit_log_recorded ON audit_log (recorded, seq)"),
        _both("CREATE INDEX audit_log_agent ON audit_log (agent, seq)"),
        _both("CREATE INDEX audit_log_agent_name ON audit_log (agent_name, seq)"),
        _both("CREATE TABLE audit_patient (seq {big} NOT NULL, patient TEXT NOT NULL)"),
        _both("CREATE INDEX audit_patient_lookup ON audit_patient (patient, seq)"),
        _both("CREATE INDEX audit_patient_seq ON audit_patient (seq)"),
        _both("CREATE TABLE audit_entity (seq {big} NOT NULL, reference TEXT NOT NULL)"),
        _both("CREATE INDEX audit_entity_lookup ON audit_entity (reference, seq)"),
        _both("CREATE INDEX audit_entity_seq ON audit_entity (seq)"),
    ]
    sqlite = [s for s, _ in statements]
    postgresql = [p for _, p in statements]
    postgresql.append(
        "CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME;"
        " END $$"
    )
    _append_only(AUDIT_ROW_TABLES, sqlite, postgresql)
    return Migration(
        6,
        "the append-only, hash-chained audit log (audit_log, audit_patient, audit_entity)",
        tuple(sqlite),
        tuple(postgresql),
    )


def _bulk_jobs() -> Migration:
    # One row per Bulk Data job ($export, $import). `status`: pending, running, completed,
    # failed, cancelled, expired. A running job holds a lease (`lease_owner` until
    # `lease_until`, epoch ms) that its worker renews; a lapsed lease means the worker died
    # and any worker may claim the job again. Times are epoch milliseconds.
    statement = _both(
        "CREATE TABLE bulk_job ("
        " id TEXT PRIMARY KEY,"
        " kind TEXT NOT NULL,"
        " status TEXT NOT NULL,"
        " owner_subject TEXT NOT NULL,"
        " owner_client TEXT,"
        " request TEXT NOT NULL,"
        " progress TEXT,"
        " manifest TEXT,"
        " error TEXT,"
        " created {big} NOT NULL,"
        " updated {big} NOT NULL,"
        " expires {big},"
        " lease_owner TEXT,"
        " lease_until {big})"
    )
    claim = _both("CREATE INDEX bulk_job_claim ON bulk_job (status, created)")
    return Migration(
        7,
        "Bulk Data jobs ($export, $import) with leases for background workers",
        (statement[0], claim[0]),
        (statement[1], claim[1]),
    )


def _ml_models() -> Migration:
    # One row per registered model version (`store/ml_models.py`). The artifact is the skops
    # file's bytes, kept in the database so every worker and every backup has it; `sha256`
    # is checked against them on every load. `status`: candidate, active, retired; at most
    # one active row per task (a partial unique index on PostgreSQL and SQLite alike).
    statements = [
        _both(
            "CREATE TABLE ml_model ("
            " id TEXT PRIMARY KEY,"
            " task TEXT NOT NULL,"
            " version INTEGER NOT NULL,"
            " model_type TEXT NOT NULL,"
            " status TEXT NOT NULL,"
            " artifact {blob} NOT NULL,"
            " sha256 TEXT NOT NULL,"
            " data_fingerprint TEXT NOT NULL,"
            " metrics TEXT NOT NULL,"
            " code_version TEXT NOT NULL,"
            " created {big} NOT NULL,"
            " updated {big} NOT NULL)"
        ),
        _both("CREATE UNIQUE INDEX ml_model_task_version ON ml_model (task, version)"),
        _both("CREATE UNIQUE INDEX ml_model_one_active ON ml_model (task) WHERE status = 'active'"),
    ]
    return Migration(
        8,
        "versioned ML models (skops artifacts, metrics, status) for risk prediction",
        tuple(s for s, _ in statements),
        tuple(p for _, p in statements),
    )


def _telehealth() -> Migration:
    # Visit rooms (`telehealth/room_store.py`): one row per room (the Appointment id), its
    # waiting-room state as JSON, changed under a row lock by whichever worker a participant
    # is connected to. `telehealth_signal` holds signalling messages too large for a
    # PostgreSQL NOTIFY payload (8,000 bytes): the notification carries the row id instead.
    statements = [
        _both(
            "CREATE TABLE telehealth_room ("
            " id TEXT PRIMARY KEY,"
            " state TEXT NOT NULL,"
            " updated {big} NOT NULL)"
        ),
        _both(
            "CREATE TABLE telehealth_signal ("
            " id {id},"
            " payload TEXT NOT NULL,"
            " created {big} NOT NULL)"
        ),
    ]
    return Migration(
        9,
        "telehealth visit rooms and oversized signalling messages",
        tuple(s for s, _ in statements),
        tuple(p for _, p in statements),
    )


def _audit_blocks() -> Migration:
    # Each group commit of the audit trail stores one row: the entries packed in order, each
    # with its own chain hash (`store/audit_records.py`), where one row per entry cost eight
    # B-tree inserts (the row, four indexes, the patient index and its two). Entry ids start
    # with their seq, so a read by id finds the block without an id index. `audit_key` is the
    # search index: one row per block and patient (`p:`), agent (`a:`) and other resource
    # (`e:`) its entries name, added for many blocks at a time from the blocks' `keys` (a
    # JSON array), with a `~` row saying up to which block it is complete. Logs of
    # migration 6 stay where they are and are read with these (their seqs all come before
    # the first block's).
    statements = [
        _both(
            "CREATE TABLE audit_block ("
            " first_seq {big} PRIMARY KEY,"
            " last_seq {big} NOT NULL,"
            " min_recorded {big} NOT NULL,"
            " max_recorded {big} NOT NULL,"
            " entries {blob} NOT NULL,"
            " keys TEXT NOT NULL,"
            " prev_hash TEXT NOT NULL,"
            " hash TEXT NOT NULL)"
        ),
        _both(
            "CREATE TABLE audit_key (key TEXT NOT NULL, first_seq {big} NOT NULL,"
            " PRIMARY KEY (key, first_seq))"
        ),
    ]
    sqlite = [s for s, _ in statements]
    sqlite[1] += " WITHOUT ROWID"
    postgresql = [p for _, p in statements]
    _append_only(AUDIT_BLOCK_TABLES, sqlite, postgresql)
    return Migration(
        10,
        "the audit log in blocks: one row per group commit (audit_block) and its search keys",
        tuple(sqlite),
        tuple(postgresql),
    )


MIGRATIONS: tuple[Migration, ...] = (
    _initial(),
    _full_text(),
    _covering_lookups(),
    _accounts(),
    _oauth(),
    _audit_log(),
    _bulk_jobs(),
    _ml_models(),
    _telehealth(),
    _audit_blocks(),
)
INDEX_TABLES: tuple[str, ...] = tuple(_INDEX_TABLES)
LATEST = MIGRATIONS[-1].number
