"""Typed settings, read once at start from the environment (prefix CAREBASE_) and CLI flags."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SystemExit(f"{name}={raw!r} is not an integer") from exc


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


#: Where cgroup v2 states a CPU quota (`max 100000`, or `<quota> <period>` in µs).
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cpus() -> int:
    """How many CPUs this process can run on at once: those its affinity allows (taskset,
    cpusets), fewer where a cgroup CPU quota caps it (a container's `--cpus`), at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max" and int(period) > 0:
            cpus = min(cpus, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):  # no cgroup v2 quota here
        pass
    return max(cpus, 1)


def default_import_workers() -> int:
    """Writer processes of a `$import` job: one per core (measured on 2 cores, see the bulk
    section of docs/benchmarks.md), at most 4; 0 on one core, where the job's thread alone
    does as well."""
    cores = usable_cpus()
    return 0 if cores < 2 else min(cores, 4)


def _env_list(name: str) -> tuple[str, ...]:
    """A comma-separated variable as a tuple of its non-empty, stripped items."""
    raw = os.environ.get(name) or ""
    return tuple(item.strip() for item in raw.split(",") if item.strip())


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting carebase reads; build with `Settings.from_env()` then `.with_(...)`."""

    data_dir: Path = Path("carebase-data")
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    #: Public base URL of the FHIR endpoint; derived from host/port when empty.
    base_url: str = ""
    max_body_bytes: int = 16 * 1024 * 1024
    max_json_depth: int = 100
    default_page_size: int = 20
    max_page_size: int = 1000
    #: The most `_include`/`_revinclude` resources added to one search page.
    max_include: int = 1000
    #: PostgreSQL pool size per worker process.
    pool_size: int = 10
    #: PostgreSQL statement_timeout: the longest one SQL statement may run.
    statement_timeout_ms: int = 30_000
    #: Development only: serve without authentication or access control (logs a warning).
    auth_disabled: bool = False
    #: Lifetime of issued access tokens, seconds.
    access_token_ttl: int = 300
    #: The token issuer (`iss`); defaults to the server's base URL without `/fhir`.
    issuer: str = ""
    #: Browser origins allowed to call the API cross-origin (CORS); empty: none. "*" allows
    #: any origin (never with credentials).
    cors_origins: tuple[str, ...] = ()
    #: Rate limit per client IP on the login and OAuth endpoints: "RATE/UNIT[:BURST]"
    #: (e.g. "10/minute:20"), or "off". Per worker process, in memory.
    auth_rate_limit: str = "10/minute:20"
    #: The largest form post (login, OAuth) accepted, bytes.
    max_form_bytes: int = 64 * 1024
    #: The largest file upload form post (multipart/form-data: the chart's documents), bytes.
    max_upload_bytes: int = 6 * 1024 * 1024
    #: TLS certificate and key (PEM) for `carebase serve`; both or neither.
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    #: Encryption at rest of resource bodies: a key ring file, or one base64 key.
    encryption_key_file: str = ""
    encryption_key: str = ""
    #: How long the audit trail gathers entries before writing them in one transaction, ms.
    audit_flush_ms: float = 5.0
    #: Where audit entries are written: `process` (a writer process of its own, which can
    #: run beside the server), `thread` (a thread of the server process), or `auto` (the
    #: default): a process where a CPU is left over for it and a thread where the server's
    #: workers have every usable CPU (`api.app.audit_writer_kind`).
    audit_writer: str = "auto"
    #: Mark browser cookies Secure even when the request arrived over plain http (behind a
    #: TLS-terminating proxy that does not say so).
    cookie_secure: bool = False
    #: Browser sessions end after this long unused, seconds (sliding).
    session_idle_seconds: int = 30 * 60
    #: Browser sessions end this long after login whatever the use, seconds.
    session_absolute_seconds: int = 12 * 60 * 60
    #: Bulk Data ($export/$import) output files are deleted this long after the job ends, s.
    bulk_file_ttl: int = 24 * 60 * 60
    #: Directories whose NDJSON files `$import` may read (`file://` inputs); empty: none.
    import_dirs: tuple[str, ...] = ()
    #: A running bulk job's lease, seconds: another worker reclaims it once lapsed.
    bulk_lease_seconds: int = 60
    #: How often the background bulk runner looks for work, seconds.
    bulk_poll_seconds: float = 1.0
    #: Writer processes of a `$import` job on PostgreSQL (0: the job's own thread writes;
    #: SQLite always has one writer). Default by measurement, see docs/bulk-data.md.
    import_workers: int = field(default_factory=lambda: default_import_workers())

    @classmethod
    def from_env(cls) -> Settings:
        """Settings from CAREBASE_* environment variables, with defaults for the rest."""
        data_dir = Path(os.environ.get("CAREBASE_DATA_DIR") or "carebase-data")
        return cls(
            data_dir=data_dir,
            database_url=os.environ.get("CAREBASE_DATABASE_URL", ""),
            host=os.environ.get("CAREBASE_HOST", "127.0.0.1"),
            port=_env_int("CAREBASE_PORT", 8080),
            workers=_env_int("CAREBASE_WORKERS", 1),
            base_url=os.environ.get("CAREBASE_BASE_URL", ""),
            max_body_bytes=_env_int("CAREBASE_MAX_BODY_BYTES", 16 * 1024 * 1024),
            max_json_depth=_env_int("CAREBASE_MAX_JSON_DEPTH", 100),
            default_page_size=_env_int("CAREBASE_DEFAULT_PAGE_SIZE", 20),
            max_page_size=_env_int("CAREBASE_MAX_PAGE_SIZE", 1000),
            max_include=_env_int("CAREBASE_MAX_INCLUDE", 1000),
            pool_size=_env_int("CAREBASE_POOL_SIZE", 10),
            statement_timeout_ms=_env_int("CAREBASE_STATEMENT_TIMEOUT_MS", 30_000),
            auth_disabled=_env_bool("CAREBASE_DEV_NO_AUTH", False),
            access_token_ttl=_env_int("CAREBASE_ACCESS_TOKEN_TTL", 300),
            issuer=os.environ.get("CAREBASE_ISSUER", ""),
            cors_origins=_env_list("CAREBASE_CORS_ORIGINS"),
            auth_rate_limit=os.environ.get("CAREBASE_AUTH_RATE_LIMIT") or "10/minute:20",
            max_form_bytes=_env_int("CAREBASE_MAX_FORM_BYTES", 64 * 1024),
            max_upload_bytes=_env_int("CAREBASE_MAX_UPLOAD_BYTES", 6 * 1024 * 1024),
            ssl_certfile=os.environ.get("CAREBASE_SSL_CERTFILE", ""),
            ssl_keyfile=os.environ.get("CAREBASE_SSL_KEYFILE", ""),
            encryption_key_file=os.environ.get("CAREBASE_ENCRYPTION_KEY_FILE", ""),
            encryption_key=os.environ.get("CAREBASE_ENCRYPTION_KEY", ""),
            audit_flush_ms=_env_int("CAREBASE_AUDIT_FLUSH_MS", 5),
            audit_writer=os.environ.get("CAREBASE_AUDIT_WRITER") or "auto",
            cookie_secure=_env_bool("CAREBASE_COOKIE_SECURE", False),
            session_idle_seconds=_env_int("CAREBASE_SESSION_IDLE_SECONDS", 30 * 60),
            session_absolute_seconds=_env_int("CAREBASE_SESSION_ABSOLUTE_SECONDS", 12 * 60 * 60),
            bulk_file_ttl=_env_int("CAREBASE_BULK_FILE_TTL", 24 * 60 * 60),
            import_dirs=_env_list("CAREBASE_IMPORT_DIRS"),
            bulk_lease_seconds=_env_int("CAREBASE_BULK_LEASE_SECONDS", 60),
            import_workers=_env_int("CAREBASE_IMPORT_WORKERS", default_import_workers()),
        )

    def with_(self, **changes: object) -> Settings:
        """A copy with the given fields changed; None values are ignored."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'carebase.db').as_posix()}"

    @property
    def fhir_base(self) -> str:
        """Absolute base URL of the FHIR endpoint (used in Location headers and links)."""
        if self.base_url:
            return self.base_url.rstrip("/")
        scheme = "https" if self.ssl_certfile else "http"
        return f"{scheme}://{self.host}:{self.port}/fhir"

    @property
    def token_issuer(self) -> str:
        """The `iss` of tokens this server issues (its origin, e.g. http://127.0.0.1:8080)."""
        if self.issuer:
            return self.issuer.rstrip("/")
        base = self.fhir_base
        return base[: -len("/fhir")] if base.endswith("/fhir") else base

    @property
    def keys_dir(self) -> Path:
        """Where the token signing keys live (files with 0600 permissions)."""
        return self.data_dir / "keys"
