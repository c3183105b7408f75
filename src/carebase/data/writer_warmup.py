"""Imported by the forkserver that starts `$import` writer processes (`parallel_load`).

Importing it loads the writer's code and the FHIR definitions once, in the forkserver, and
takes them out of the garbage collector's generations (`tune_for_ingest`); each writer is
forked from that process ready to write, instead of a fresh interpreter importing all of
carebase per writer and per job (about a quarter of a CPU second each).
"""

from __future__ import annotations

from carebase.data import parallel_load  # noqa: F401  (the writers' code, imported once)
from carebase.data.loader import tune_for_ingest

tune_for_ingest()
