"""Markdown for the search benchmark: docs/benchmarks.md section `search`, docs/search-plans.md.

Renders the results files `bench_search.py` saves (one per database), so a report can be
re-made without measuring again (`bench_search.py --report-only`).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from report import REPO, write_section

PLANS_DOC = REPO / "docs" / "search-plans.md"
NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
Result = dict[str, Any]


def _ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _ratio(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x"


def _stats(samples: list[float]) -> tuple[float, float]:
    if not samples:
        return math.nan, math.nan
    if len(samples) < 2:
        return samples[0], samples[0]
    return statistics.median(samples), statistics.quantiles(samples, n=20, method="inclusive")[18]


def _latency_cell(lat: dict[str, Any]) -> str:
    if lat["skipped"]:
        return "not supported by this build"
    median, p95 = _stats(lat["samples"])
    return f"{_ms(median)} / {_ms(p95)} ({len(lat['samples'])})"


def _met(lat: dict[str, Any]) -> str:
    if lat["skipped"] or lat["target_ms"] is None:
        return "-"
    _median, p95 = _stats(lat["samples"])
    return "yes" if p95 < lat["target_ms"] else "no"


def _paging(paging: dict[str, Any]) -> tuple[float, float, float]:
    if not paging["page1"]:
        return math.nan, math.nan, math.nan
    p1, p50 = statistics.median(paging["page1"]), statistics.median(paging["page50"])
    return p1, p50, p50 / p1


def targets_met(measured: dict[str, Any]) -> int:
    """How many of the issue's latency and paging targets `measured` meets."""
    met = sum(1 for lat in measured["latencies"] if _met(lat) == "yes")
    ratio = _paging(measured["paging"])[2]
    return met + (1 if ratio <= 2 else 0)


def _p95_sum(measured: dict[str, Any]) -> float:
    return sum(_stats(lat["samples"])[1] for lat in measured["latencies"] if lat["samples"])


def best_experiment(result: Result) -> dict[str, Any] | None:
    """The experiment meeting the most targets (then the lowest sum of p95), if any beats
    the baseline."""
    best = None
    for exp in result["experiments"]:
        key = (targets_met(exp), -_p95_sum(exp))
        if best is None or key > best[0]:
            best = (key, exp)
    if best is None:
        return None
    baseline = (targets_met(result["baseline"]), -_p95_sum(result["baseline"]))
    return best[1] if best[0] > baseline else None


def _latency_table(results: list[Result]) -> list[str]:
    header = "| query class (in-process `store.search`) | target p95 |"
    rule = "|---|---|"
    for r in results:
        header += f" {NAMES[r['backend']]} median / p95 ms (n) | met |"
        rule += "---|---|"
    lines = [header, rule]
    for i, lat in enumerate(results[0]["baseline"]["latencies"]):
        target = f"< {lat['target_ms']:.0f} ms" if lat["target_ms"] else "-"
        row = f"| {lat['label']} | {target} |"
        for r in results:
            other = r["baseline"]["latencies"][i]
            row += f" {_latency_cell(other)} | {_met(other)} |"
        lines.append(row)
    notes = [
        f"- {NAMES[r['backend']]}, {lat['key']}: {lat['note']}"
        for r in results
        for lat in r["baseline"]["latencies"]
        if lat["note"]
    ]
    return lines + (["", *notes] if notes else [])


def _paging_lines(results: list[Result], key: str = "baseline") -> list[str]:
    lines = [
        "| database | searches (>= 100,000 results) | page 1 median ms | page 50 median ms |"
        " page 50 / page 1 | met (<= 2x) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        paging = r[key]["paging"]
        p1, p50, ratio = _paging(paging)
        searches = "; ".join(x for x in (", ".join(paging["searches"]), paging["note"]) if x)
        met = "-" if math.isnan(ratio) else ("yes" if ratio <= 2 else "no")
        lines.append(
            f"| {NAMES[r['backend']]} | {searches} | {_ms(p1)} | {_ms(p50)} | "
            f"{_ratio(ratio)} | {met} |"
        )
    return lines


def _http_lines(results: list[Result]) -> list[str]:
    lines = [
        "| database | configuration | scenario (HTTP, wrk) | req/s | p50 ms | p99 ms | errors |"
        " vs read |",
        "|---|---|---|---|---|---|---|---|",
    ]
    runs = [(r, "schema as shipped", r["http"]) for r in results]
    for r in results:
        best = best_experiment(r)
        if best and "http" in best:
            runs.append((r, best["name"], best["http"]))
    for r, config, http in runs:
        rows = http["rows"]
        read = next((x["rps"] for x in rows if x["name"].startswith("read") and "rps" in x), None)
        for row in rows:
            if "skipped" in row:
                refused = "HTTP 501" in row["skipped"] or "HTTP 400" in row["skipped"]
                why = (
                    "not supported by this build"
                    if refused
                    else "no response within 30 s to the check request sent before measuring"
                    if "timed out" in row["skipped"]
                    else f"failed: {row['skipped']}"
                )
                lines.append(
                    f"| {NAMES[r['backend']]} | {config} | {row['name']} | {why} | | | | |"
                )
                continue
            ratio = f"{row['rps'] / read:.4f}" if read else "-"
            if not row["requests"]:
                lines.append(
                    f"| {NAMES[r['backend']]} | {config} | {row['name']} | 0 (none completed in "
                    f"{row['seconds']:.0f} s) | | | {row['errors']} | 0 |"
                )
                continue
            lines.append(
                f"| {NAMES[r['backend']]} | {config} | {row['name']} | {row['rps']:,.1f} | "
                f"{_ms(row['p50_ms'])} | {_ms(row['p99_ms'])} | {row['errors']} | {ratio} |"
            )
        if http.get("note"):
            lines.append(f"| {NAMES[r['backend']]} | {config} | {http['note']} | | | | | |")
    return lines


def _experiment_lines(results: list[Result]) -> list[str]:
    lines = []
    for r in results:
        if not r["experiments"]:
            continue
        runs = [("as loaded (schema as shipped)", r["baseline"], None), *[
            (e["name"], e, e) for e in r["experiments"]
        ]]  # fmt: skip
        keys = [lat["key"] for lat in r["baseline"]["latencies"]]
        lines += [
            f"**{NAMES[r['backend']]}** (median / p95 ms; build time and added size of the DDL)",
            "",
            "| configuration | " + " | ".join(keys) + " | page 50 / page 1 | targets met |"
            " DDL time | added size |",
            "|---|" + "---|" * (len(keys) + 4),
        ]
        for name, measured, exp in runs:
            cells = []
            for lat in measured["latencies"]:
                median, p95 = _stats(lat["samples"])
                cells.append("n/a" if lat["skipped"] else f"{_ms(median)} / {_ms(p95)}")
            ratio = _paging(measured["paging"])[2]
            extra = (
                f"{exp['ddl_seconds']:.0f} s | {exp['bytes'] / 2**20:,.0f} MiB" if exp else "- | -"
            )
            lines.append(
                f"| {name} | " + " | ".join(cells) + f" | {_ratio(ratio)} | "
                f"{targets_met(measured)} | {extra} |"
            )
        best = best_experiment(r)
        lines.append("")
        if best:
            lines.append(f"Best measured on {NAMES[r['backend']]}: {best['name']}:")
            lines += ["", "```sql", *[f"{s};" for s in best["ddl"]], "```"]
        else:
            lines.append(f"No experiment beat the schema as shipped on {NAMES[r['backend']]}.")
        lines.append("")
    return lines


def _shape_lines(results: list[Result]) -> list[str]:
    lines = []
    for r in results:
        runs = [("schema as shipped", r["baseline"])] + [(e["name"], e) for e in r["experiments"]]
        shapes = r["baseline"].get("shapes", [])
        if not shapes:
            continue
        lines += [
            f"**{NAMES[r['backend']]}** (median / p95 ms, n per shape in the first row)",
            "",
            "| configuration | " + " | ".join(s["key"] for s in shapes) + " |",
            "|---|" + "---|" * len(shapes),
        ]
        for i, (name, measured) in enumerate(runs):
            cells = []
            for item in measured.get("shapes", []):
                median, p95 = _stats(item["samples"])
                n = f" ({len(item['samples'])})" if i == 0 else ""
                cells.append(f"{_ms(median)} / {_ms(p95)}{n}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    labels = {s["key"]: s["label"] for r in results for s in r["baseline"].get("shapes", [])}
    return lines + [f"- {key}: {label}" for key, label in labels.items()] + [""]


def _size_lines(results: list[Result]) -> list[str]:
    lines = []
    for r in results:
        n = r["resources"]
        total = r["database_bytes"]
        lines.append(
            f"**{NAMES[r['backend']]}**: {total / 2**30:,.2f} GiB in all, "
            f"{total / n:,.0f} bytes per resource."
        )
        lines += ["", "| table / index | kind | MiB | bytes per resource |", "|---|---|---|---|"]
        for kind, name, size in r["sizes"]:
            if size >= 2**20:
                lines.append(f"| {name} | {kind} | {size / 2**20:,.0f} | {size / n:,.0f} |")
        index_bytes = sum(s for _k, name, s in r["sizes"] if name.startswith("idx_"))
        lines += [
            "",
            f"Search index tables and their indexes (`idx_*`): {index_bytes / 2**20:,.0f} MiB, "
            f"{index_bytes / n:,.0f} bytes per resource.",
            "",
        ]
    return lines


def _verdict(measured: dict[str, Any], key: str) -> str:
    if key == "paging":
        ratio = _paging(measured["paging"])[2]
        return "-" if math.isnan(ratio) else f"{'met' if ratio <= 2 else 'not met'} ({ratio:.2f}x)"
    lat = next(x for x in measured["latencies"] if x["key"] == key)
    if lat["skipped"]:
        return "not supported by this build"
    p95 = _stats(lat["samples"])[1]
    return f"{'met' if p95 < lat['target_ms'] else 'not met'} (p95 {_ms(p95)} ms)"


def _shape_verdict(measured: dict[str, Any], key: str, target: float | None) -> str:
    shape = next((x for x in measured.get("shapes", []) if x["key"] == key), None)
    if shape is None or target is None or not shape["samples"]:
        return "-"
    p95 = _stats(shape["samples"])[1]
    return f"{'met' if p95 < target else 'not met'} (p95 {_ms(p95)} ms)"


def _target_lines(results: list[Result]) -> list[str]:
    targets = [
        ("token", "token search p95 < 20 ms"),
        ("patient", "patient-scoped search p95 < 20 ms"),
        ("string", "string prefix p95 < 30 ms"),
        ("chained", "chained p95 < 100 ms"),
        ("revinclude", "_revinclude p95 < 100 ms"),
        ("paging", "page 50 no slower than 2x page 1"),
    ]
    targets_ms = {"token": 20.0, "patient": 20.0, "chained": 100.0, "revinclude": 100.0}
    header = "| target (issue 3) |"
    rule = "|---|"
    for r in results:
        name = NAMES[r["backend"]]
        header += (
            f" {name}, schema as shipped | {name}, best DDL tried |"
            f" {name}, index-first SQL with that DDL |"
        )
        rule += "---|---|---|"
    lines = [header, rule]
    for key, label in targets:
        row = f"| {label} |"
        for r in results:
            best = best_experiment(r)
            row += f" {_verdict(r['baseline'], key)} |"
            row += f" {_verdict(best, key) if best else 'no better DDL found'} |"
            row += f" {_shape_verdict(best or r['baseline'], key, targets_ms.get(key))} |"
        lines.append(row)
    return lines


def benchmarks_section(results: list[Result]) -> str:
    """The `search` section of docs/benchmarks.md."""
    first = results[0]
    loads = "; ".join(
        f"{NAMES[r['backend']]}: {r['resources']:,} current resources, "
        + (
            f"rows copied from the SQLite database (COPY, then the schema's indexes built) in "
            f"{r['load_seconds'] / 60:.1f} min"
            if r.get("copied")
            else f"{r['writes']:,} writes through the Store API in "
            f"{r['load_seconds'] / 60:.1f} min = {r['writes'] / r['load_seconds']:,.0f} "
            "resources/s"
        )
        for r in results
    )
    lines = [
        "## Search at a million resources",
        "",
        f"Machine: {first['machine']}. Scripts: `bench/search_dataset.py` builds (once; reused, "
        "and migrated forward, while the dataset parameters match) about 1,000,000 resources: the "
        "100 Synthea patient Bundles stored again and again through the Store API "
        "(`tx.update`, batches of 5,000), each copy with fresh ids, references rewritten to "
        "match, a two-letter suffix on family names and a `-<copy>` suffix on Patient "
        f"identifiers. Load: {loads} (the machine was shared with other jobs while loading). "
        f"`bench/bench_search.py` (`make bench-search`) measures the rest; up to "
        f"{first['queries']} distinct queries per class, drawn from the data with a fixed "
        "seed, after a short warm-up, each query timed as one `store.search(..., count=20, "
        "total='accurate')` call in-process (the API counts the total by default); a class "
        "stops early when it has run for its time budget, as its note says. Other jobs "
        "shared the two cores during the runs: absolute figures are noisy, ratios less so.",
        "",
        "### Targets",
        "",
        *_target_lines(results),
        "",
        "Search throughput against read-by-id: see the HTTP table below.",
        "",
        "### Latency by query class (schema as shipped)",
        "",
        *_latency_table(results),
        "",
        "### Page 50 against page 1 (in-process, `_count=20`, next cursors followed, no total)",
        "",
        *_paging_lines(results),
        "",
        "### Throughput: searches against read-by-id (HTTP, same run)",
        "",
        "`carebase serve` (one process) pinned to CPU 0, wrk pinned to CPU 1 with 8 "
        "connections, each scenario warmed up 2 s then measured; ids, codes and prefixes "
        "cycle through the drawn samples; totals counted (API default).",
        "",
        *_http_lines(results),
        "",
        "### Index experiments (ad-hoc DDL on the bench databases, undone afterwards)",
        "",
        "Each configuration is applied to the loaded database, every class measured again "
        "with the same queries, then the DDL is undone. Plans: docs/search-plans.md.",
        "",
        *_experiment_lines(results),
        "### The same classes as index-first SQL (raw SQL, for the search engine's authors)",
        "",
        "Index rows exist only for current, non-deleted resources and a parameter key implies "
        "the type, so ids, order and total can come from the index tables alone, reading "
        "`resource` only for the page's bodies (`bench/search_shapes.py`). Each timed query: "
        "one page of ids (keyset `rid > cursor`; token pages followed like above), the "
        "bodies, and the total. The store runs this shape itself where the criteria allow "
        "(`search_sql.IndexFirst`); these hand-written statements are a yardstick (their "
        "patient shape lacks the store's SQLite steering and its sort).",
        "",
        *_shape_lines(results),
        "### Size per resource",
        "",
        *_size_lines(results),
    ]
    return "\n".join(lines)


def _plan_lines(plans: list[dict[str, Any]]) -> list[str]:
    lines = []
    for item in plans:
        lines += [f"#### {item['key']}: `{item['query']}`", ""]
        if "skipped" in item:
            lines += [f"Skipped: {item['skipped']}.", ""]
            continue
        for st in item["statements"]:
            scans = st["scans"]
            flag = (
                "**Full scan of a big table:** " + "; ".join(f"`{s}`" for s in scans)
                if scans
                else "No full scan of a big table."
            )
            lines += [
                "```sql",
                st["sql"],
                "```",
                f"Arguments: `{st['args']}`. {flag}",
                "",
                "```",
                st["plan"],
                "```",
                "",
            ]
    return lines


def plans_doc(results: list[Result]) -> str:
    """docs/search-plans.md."""
    lines = [
        "# Query plans of the search benchmark",
        "",
        "Written by `bench/bench_search.py` (`make bench-search`); do not edit by hand. For one "
        "representative query of each class, every statement the store ran (captured from its "
        "cursor) with the database's plan: SQLite `EXPLAIN QUERY PLAN`, PostgreSQL "
        "`EXPLAIN (ANALYZE, BUFFERS)` (so the PostgreSQL plans carry actual times and rows). "
        "Lines that read a big table (`resource`, `resource_version`, `idx_*`) from end to end "
        "are flagged: a SQLite `SCAN` (with or without an index: either way the whole table "
        "or index is walked, though a LIMIT may stop it early) or a PostgreSQL `Seq Scan`.",
        "",
    ]
    for r in results:
        lines += [f"## {NAMES[r['backend']]}, schema as shipped", ""]
        lines += _plan_lines(r["baseline"]["plans"])
        best = best_experiment(r)
        if best:
            lines += [f"## {NAMES[r['backend']]}, with: {best['name']}", ""]
            lines += ["```sql", *[f"{s};" for s in best["ddl"]], "```", ""]
            lines += _plan_lines(best["plans"])
    return "\n".join(lines)


def write_reports(results: list[Result]) -> None:
    """Write both documents from the saved results."""
    if not results:
        print("no results to report")
        return
    section = benchmarks_section(results)
    write_section("search", section)
    PLANS_DOC.write_text(plans_doc(results).rstrip() + "\n")
    print(section)
