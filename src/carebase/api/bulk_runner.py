"""The background worker of Bulk Data jobs: claims queued jobs, runs them, cleans up.

Each server process runs one `BulkRunner` thread (started and stopped by the app's
lifespan). It claims a job under a lease (`store.bulk_jobs.claim`), runs it, renewing the
lease with each progress report, and records the manifest or the failure. A job whose
worker died is claimed again once its lease lapses and runs from the start (an export
rewrites its files; an import is idempotent). Finished jobs' files are deleted when their
time is up. Without a lifespan (tests, tools) `run_pending()` runs the queue to the end in
the calling thread, deterministically.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from carebase.api.bulk_export import JobStopped, run_export
from carebase.api.bulk_import import run_import
from carebase.config import Settings
from carebase.errors import CarebaseError
from carebase.store import bulk_jobs
from carebase.store.base import Store
from carebase.store.bulk_jobs import BulkJob
from carebase.store.sql_store import SqlStore

log = logging.getLogger("carebase.bulk")
#: Seconds between progress reports (each renews the lease and notices a cancel).
REPORT_EVERY = 0.5


class BulkRunner:
    """Runs the bulk job queue of one store; `start()` a thread, or call `run_pending()`."""

    def __init__(self, store: Callable[[], Store], settings: Settings) -> None:
        self._store = store
        self.settings = settings
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def store(self) -> SqlStore:
        """The SQL store the jobs live in."""
        store = self._store()
        if not isinstance(store, SqlStore):
            raise TypeError(f"bulk jobs need a SQL store, not {type(store).__name__}")
        return store

    def directory(self, job_id: str) -> Path:
        """Where job `job_id` keeps its files."""
        return self.settings.data_dir / "bulk" / job_id

    def upload(self, job_id: str) -> Path:
        """Where the NDJSON body of `$import` job `job_id` is kept until the job is over
        (outside the job's output directory, which a rerun starts afresh)."""
        return self.settings.data_dir / "bulk" / "uploads" / f"{job_id}.ndjson"

    def _discard(self, job_id: str) -> None:
        shutil.rmtree(self.directory(job_id), ignore_errors=True)
        self.upload(job_id).unlink(missing_ok=True)

    # --- the queue ----------------------------------------------------------------------------

    def run_pending(self) -> int:
        """Delete expired files, then run queued jobs until none is left; how many ran."""
        self.clean_expired()
        ran = 0
        lease = self.settings.bulk_lease_seconds * 1000
        while not self._stop.is_set():
            job = bulk_jobs.claim(self.store, self.worker, lease)
            if job is None:
                return ran
            self.run(job)
            ran += 1
        return ran

    def run(self, job: BulkJob) -> None:
        """Run one claimed job to its end: manifest, failure, or stop when cancelled."""
        store, directory = self.store, self.directory(job.id)
        shutil.rmtree(directory, ignore_errors=True)  # a reclaimed job starts over
        last = [0.0]
        lease = self.settings.bulk_lease_seconds * 1000

        def progress(text: str) -> bool:
            now = time.monotonic()
            if now - last[0] < REPORT_EVERY:
                return not self._stop.is_set()
            last[0] = now
            return bulk_jobs.report(store, job.id, self.worker, text, lease) and (
                not self._stop.is_set()
            )

        try:
            if job.kind == "export":
                result = run_export(store, job, directory, progress)
            else:
                result = run_import(store, job, directory, progress, self.settings)
        except JobStopped:
            self._after_stop(job.id)
            return
        except CarebaseError as exc:
            self._fail(job, exc.operation_outcome())
            return
        except Exception:  # a job's bug must not kill the worker
            log.exception("bulk job %s failed", job.id)
            outcome = _outcome("exception", "The job failed on an internal error; see the log")
            self._fail(job, outcome)
            return
        manifest = self._manifest(job, result)
        expires = bulk_jobs.now_ms() + self.settings.bulk_file_ttl * 1000
        if bulk_jobs.finish(store, job.id, self.worker, manifest=manifest, expires=expires):
            self.upload(job.id).unlink(missing_ok=True)
        else:
            self._after_stop(job.id)

    def _manifest(self, job: BulkJob, result: dict[str, Any]) -> dict[str, Any]:
        request = job.request
        files = f"{request['base']}/$bulk-file/{job.id}/"
        manifest: dict[str, Any] = {
            "transactionTime": request["transaction_time"],
            "request": request["url"],
            "requiresAccessToken": True,
            "output": [_linked(entry, files) for entry in result["output"]],
            "error": [_linked(entry, files) for entry in result["error"]],
        }
        if "counts" in result:
            manifest["extension"] = {"counts": result["counts"]}
        return manifest

    def _fail(self, job: BulkJob, outcome: dict[str, object]) -> None:
        self._discard(job.id)
        bulk_jobs.finish(
            self.store,
            job.id,
            self.worker,
            error=outcome,
            expires=bulk_jobs.now_ms() + self.settings.bulk_file_ttl * 1000,
        )

    def _after_stop(self, job_id: str) -> None:
        """A stopped job: a cancelled one's files go; a reclaimed one's belong to the new
        run; at shutdown the lease lapses and a worker runs the job again later."""
        current = bulk_jobs.get(self.store, job_id)
        if current is None or current.status == bulk_jobs.CANCELLED:
            self._discard(job_id)
        elif self._stop.is_set() and current.lease_owner == self.worker:
            bulk_jobs.set_status(self.store, job_id, bulk_jobs.PENDING)  # next start runs it

    def cancel(self, job: BulkJob) -> None:
        """Cancel `job` and delete its files (a worker running it stops at its next report)."""
        bulk_jobs.set_status(self.store, job.id, bulk_jobs.CANCELLED)
        self._discard(job.id)

    def clean_expired(self) -> int:
        """Delete the files of jobs whose time is up and mark them expired; how many."""
        ids = bulk_jobs.expired(self.store)
        for job_id in ids:
            self._discard(job_id)
            bulk_jobs.set_status(self.store, job_id, bulk_jobs.EXPIRED)
        return len(ids)

    # --- the thread ---------------------------------------------------------------------------

    def start(self) -> None:
        """Run the queue in a background thread until `stop()`."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="carebase-bulk", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread: a running job stops at its next progress report, keeping its
        row running until its lease lapses (then any worker takes it up again)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_pending()
            except Exception:  # e.g. the database restarting: try again later
                log.exception("the bulk job runner hit an error; retrying")
            self._wake.wait(self.settings.bulk_poll_seconds)
            self._wake.clear()

    def wake(self) -> None:
        """Look for work now (a job was just queued) instead of at the next poll."""
        self._wake.set()


def _linked(entry: dict[str, Any], files: str) -> dict[str, Any]:
    """A manifest entry with its file name made a download URL (import counts have none)."""
    return {**entry, "url": files + entry["url"]} if "url" in entry else entry


def _outcome(code: str, text: str) -> dict[str, object]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }
