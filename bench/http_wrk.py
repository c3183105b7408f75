"""Driving wrk from Python: a Lua script per load shape, results parsed from its JSON line.

wrk's own report rounds latencies and hides non-2xx counts in prose; the Lua `done` hook
prints one JSON line with exact figures instead. Requests cycle through a list of ids so reads
and updates touch many rows rather than one hot row.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx

_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors":%d,"status_errors":%d,'
    .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


@dataclass
class LoadSpec:
    """One request shape: method, path (ids appended in turn when given), optional JSON body.

    For PUT the body gets `"id"` set to the id in the URL, as FHIR update requires.
    """

    method: str
    path: str
    ids: list[str] = field(default_factory=list)
    body: str | None = None


@dataclass
class WrkResult:
    """One measured scenario."""

    name: str
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    errors: int  # socket errors, timeouts and non-2xx/3xx responses
    seconds: float
    connections: int
    #: CPU time the server process and its children spent per request while measured (µs)
    server_cpu_us: float | None = None

    def line(self) -> str:
        cpu = f"  server CPU {self.server_cpu_us:5.0f} µs/req" if self.server_cpu_us else ""
        return (
            f"{self.name:<20} {self.rps:>9,.0f} req/s  p50 {self.p50_ms:7.2f} ms  "
            f"p99 {self.p99_ms:7.2f} ms  errors {self.errors}{cpu}"
        )


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process `pid`, its threads and its descendants
    (Linux /proc; waited-for children count through cutime/cstime, live ones are walked)."""
    ticks = os.sysconf("SC_CLK_TCK")

    def own(p: int) -> float:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return 0.0
        return sum(int(f) for f in fields[11:15]) / ticks

    total, pending = 0.0, [pid]
    while pending:
        p = pending.pop()
        total += own(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pending += [int(c) for c in task.read_text().split()]
    return total


def _lua_string(text: str) -> str:
    """A Lua long-bracket literal that cannot be closed early by `text`."""
    level = 1
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def lua_script(spec: LoadSpec, token: str | None) -> str:
    """The wrk script for `spec`."""
    headers = {"Accept": "application/fhir+json"}
    if spec.body is not None:
        headers["Content-Type"] = "application/fhir+json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    header_lua = ", ".join(f"[ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in headers.items())
    lines = [f"local headers = {{{header_lua}}}", f"local method = {_lua_string(spec.method)}"]
    lines.append(f"local path = {_lua_string(spec.path)}")
    lines.append("local ids = {" + ", ".join(_lua_string(i) for i in spec.ids) + "}")
    if spec.body is not None and spec.method == "PUT" and spec.ids:
        # Pre-build one body per id: '{"id":"<id>",' + the rest of the resource.
        rest = spec.body.lstrip()[1:]
        lines.append(f"local rest = {_lua_string(rest)}")
        lines.append("local bodies = {}")
        lines.append(
            "for i, id in ipairs(ids) do bodies[i] = '{\"id\":\"' .. id .. '\",' .. rest end"
        )
    elif spec.body is not None:
        lines.append(f"local body = {_lua_string(spec.body)}")
    lines.append("local n = 0")
    lines.append("request = function()")
    if spec.ids:
        lines.append("  n = n % #ids + 1")
        target = "path .. ids[n]"
    else:
        target = "path"
    if spec.body is None:
        lines.append(f"  return wrk.format(method, {target}, headers)")
    elif spec.method == "PUT" and spec.ids:
        lines.append(f"  return wrk.format(method, {target}, headers, bodies[n])")
    else:
        lines.append(f"  return wrk.format(method, {target}, headers, body)")
    lines.append("end")
    # Start each thread at a different point of the id list.
    lines.append("init = function(args) n = math.random(#ids > 0 and #ids or 1) - 1 end")
    return "\n".join(lines) + "\n" + _DONE


def _wrk(base: str, script: Path, seconds: float, connections: int, cpu: str) -> dict[str, float]:
    cmd = ["taskset", "-c", cpu, "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
           "--timeout", "10s", "-s", str(script), base]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    out = done.stdout + done.stderr
    for line in out.splitlines():
        if line.startswith("WRKJSON "):
            parsed: dict[str, float] = json.loads(line[len("WRKJSON ") :])
            return parsed
    raise RuntimeError(f"wrk printed no result:\n{out}")


def check_once(base: str, spec: LoadSpec, token: str | None) -> None:
    """Send one request shaped like `spec`; fail loudly unless it succeeds (2xx)."""
    headers = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    path = spec.path + (spec.ids[0] if spec.ids else "")
    body = spec.body
    if body is not None and spec.method == "PUT" and spec.ids:
        body = '{"id":"' + spec.ids[0] + '",' + body.lstrip()[1:]
    response = httpx.request(spec.method, base + path, content=body, headers=headers, timeout=30)
    if not response.is_success:
        raise RuntimeError(
            f"{spec.method} {path}: HTTP {response.status_code} {response.text[:400]}"
        )


def run_wrk(
    name: str,
    base: str,
    spec: LoadSpec,
    seconds: float,
    warmup: float,
    connections: int,
    cpu: str,
    token: str | None = None,
    server_pid: int | None = None,
) -> WrkResult:
    """Check one request, warm up, then measure `spec` against `base` for `seconds`
    (and the CPU time process `server_pid` spends on it, when given)."""
    check_once(base, spec, token)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(lua_script(spec, token))
    script = Path(handle.name)
    try:
        if warmup > 0:
            _wrk(base, script, warmup, connections, cpu)
        cpu_before = process_cpu_seconds(server_pid) if server_pid else 0.0
        raw = _wrk(base, script, seconds, connections, cpu)
        cpu_spent = process_cpu_seconds(server_pid) - cpu_before if server_pid else 0.0
    finally:
        script.unlink(missing_ok=True)
    duration = raw["duration_us"] / 1e6
    return WrkResult(
        name=name,
        rps=raw["requests"] / duration if duration else 0.0,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        requests=int(raw["requests"]),
        errors=int(raw["errors"] + raw["status_errors"]),
        seconds=duration,
        connections=connections,
        server_cpu_us=cpu_spent / raw["requests"] * 1e6 if server_pid and raw["requests"] else None,
    )
