"""Model cards: a registered model's purpose, data, performance (with 95% intervals),
calibration, discrimination, subgroup gaps and limitations, as Markdown and HTML with PNG
plots (matplotlib's Agg backend: no display needed).

`CardData` is what a card shows; `card_data(record, task)` builds it from a registry record
(its metrics were computed at training time by `ml.evaluation`). The renderers are pure
functions of `CardData`; `write_card` writes `card.md`, `card.html` and the PNGs to a folder.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import jinja2
import markupsafe
import matplotlib

matplotlib.use("Agg")  # before pyplot: cards render on servers without a display
import matplotlib.pyplot as plt

#: The TRIPOD+AI (2024) reporting topics a generated card covers, and where. Topics about a
#: study rather than a model (ethics approval, funding, registration, patient involvement,
#: protocol) cannot come from the registry and are left to whoever publishes the model.
TRIPOD_ITEMS: tuple[tuple[str, str], ...] = (
    ("Title / identification of the model", "heading, task, model type and version"),
    ("Objectives", "intended use"),
    ("Data sources and participants", "data"),
    ("Outcome definition", "description and data (the task's label)"),
    ("Predictors", "data, most influential features"),
    ("Missing data", "data (how missing values are handled)"),
    ("Analytical methods", "model type; data (preprocessing, splits)"),
    ("Fairness", "subgroups table and largest gap"),
    ("Model output", "intended use (a probability 0-1, or a value)"),
    ("Training versus evaluation", "performance (split of each figure)"),
    ("Model performance with uncertainty", "performance table with 95% intervals, plots"),
    ("Calibration", "calibration plot (classification) or residuals (regression)"),
    ("Model specification / availability", "artifact SHA-256, code version, data fingerprint"),
    ("Limitations", "limitations"),
    ("Usability / how to use the model", "intended use ($predict, CDS Hooks)"),
)


@dataclass(frozen=True, slots=True)
class MetricRow:
    """One performance figure with its 95% interval (None when not estimated)."""

    name: str
    value: float
    low: float | None = None
    high: float | None = None
    split: str = "held-out"


@dataclass(frozen=True, slots=True)
class SubgroupRow:
    """One subgroup's performance: attribute (sex, age band...), group, size, metric, value."""

    attribute: str
    group: str
    n: int
    metric: str
    value: float


@dataclass(frozen=True)
class CardData:
    """Everything one model card says."""

    model_id: str
    version: int
    task: str
    kind: str
    model_type: str
    status: str
    created: str
    code_version: str
    sha256: str
    data_fingerprint: str
    description: str
    intended_use: str
    data: str
    limitations: list[str]
    metrics: list[MetricRow]
    calibration: list[tuple[float, float]] = field(default_factory=list)
    roc: tuple[list[float], list[float]] | None = None
    residuals: tuple[list[float], list[float]] | None = None
    subgroups: list[SubgroupRow] = field(default_factory=list)
    features: list[tuple[str, float]] = field(default_factory=list)

    def largest_gap(self) -> tuple[str, str, float, str, str] | None:
        """(attribute, metric, gap, worst group, best group) of the widest subgroup spread."""
        best: tuple[str, str, float, str, str] | None = None
        by_key: dict[tuple[str, str], list[SubgroupRow]] = {}
        for row in self.subgroups:
            if not math.isnan(row.value):
                by_key.setdefault((row.attribute, row.metric), []).append(row)
        for (attribute, metric), rows in by_key.items():
            if len(rows) < 2:
                continue
            low = min(rows, key=lambda r: r.value)
            high = max(rows, key=lambda r: r.value)
            gap = high.value - low.value
            if best is None or gap > best[2]:
                best = (attribute, metric, gap, low.group, high.group)
        return best


# --- plots ----------------------------------------------------------------------------------


def _png(fig: plt.Figure) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out.getvalue()


def calibration_png(points: list[tuple[float, float]]) -> bytes:
    """Observed against predicted risk per bin, with the diagonal of perfect calibration."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    if points:
        ax.plot([p for p, _ in points], [o for _, o in points], marker="o", label="model")
    ax.set(xlabel="predicted risk", ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1))
    ax.set_title("Calibration (held-out)")
    ax.legend(loc="upper left")
    return _png(fig)


def roc_png(fpr: list[float], tpr: list[float], auc: float | None) -> bytes:
    """The ROC curve with the chance diagonal."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    label = "model" if auc is None else f"model (AUROC {auc:.3f})"
    ax.plot(fpr, tpr, label=label)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1))
    ax.set_title("ROC (held-out)")
    ax.legend(loc="lower right")
    return _png(fig)


def residuals_png(predicted: list[float], residuals: list[float]) -> bytes:
    """Residuals (observed - predicted) against predicted values."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.axhline(0, linestyle="--", color="grey")
    ax.scatter(predicted, residuals, s=6, alpha=0.5)
    ax.set(xlabel="predicted", ylabel="observed - predicted")
    ax.set_title("Residuals (held-out)")
    return _png(fig)


def plots(data: CardData) -> dict[str, bytes]:
    """The card's PNG plots by file name."""
    out: dict[str, bytes] = {}
    if data.kind == "classification":
        out["calibration.png"] = calibration_png(data.calibration)
        if data.roc is not None:
            auc = next((m.value for m in data.metrics if m.name.lower() == "auroc"), None)
            out["roc.png"] = roc_png(data.roc[0], data.roc[1], auc)
    elif data.residuals is not None:
        out["residuals.png"] = residuals_png(*data.residuals)
    return out


# --- rendering ------------------------------------------------------------------------------

_MARKDOWN = """# Model card: {{ d.model_id }}

{{ d.description }}

| | |
|---|---|
| Task | `{{ d.task }}` ({{ d.kind }}) |
| Model | {{ d.model_type }}, version {{ d.version }} ({{ d.status }}) |
| Registered | {{ d.created }} |
| Code version | {{ d.code_version }} |
| Artifact SHA-256 | `{{ d.sha256 }}` |
| Training data fingerprint | `{{ d.data_fingerprint }}` |

## Intended use

{{ d.intended_use }}

## Data

{{ d.data }}

## Performance

| Metric | Split | Value | 95% interval |
|---|---|---|---|
{% for m in d.metrics -%}
| {{ m.name }} | {{ m.split }} | {{ fmt(m.value) }} | {{ interval(m) }} |
{% endfor %}
{% for name in images %}
![{{ name }}]({{ image_base }}{{ name }})
{% endfor %}

## Subgroups

{% if gap -%}
Largest gap: **{{ fmt(gap[2]) }}** in {{ gap[1] }} across {{ gap[0] }}
({{ gap[3] }} lowest, {{ gap[4] }} highest).
{% else -%}
No subgroup comparison was possible (fewer than two groups with a value).
{% endif %}
| Attribute | Group | n | Metric | Value |
|---|---|---|---|---|
{% for s in d.subgroups -%}
| {{ s.attribute }} | {{ s.group }} | {{ s.n }} | {{ s.metric }} | {{ fmt(s.value) }} |
{% endfor %}
{% if d.features %}
## Most influential features

| Feature | Importance |
|---|---|
{% for name, value in d.features -%}
| {{ name }} | {{ fmt(value) }} |
{% endfor %}
{% endif %}
## Limitations

{% for item in d.limitations -%}
- {{ item }}
{% endfor %}
## TRIPOD+AI items covered

{% for item, where in tripod -%}
- {{ item }}: {{ where }}
{% endfor %}
"""

#: The card page's stylesheet, inline so that card.html stands alone as a file. Served over
#: HTTP under a CSP that allows exactly this style by its hash (`card_style_source`).
CARD_STYLE = (
    "body{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}\n"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25rem .5rem;"
    "text-align:left}\nimg{max-width:45%;margin:.5rem}"
)


def card_style_source() -> str:
    """The CSP source expression (`'sha256-...'`) that allows the card's inline style."""
    digest = hashlib.sha256(CARD_STYLE.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Model card: {{ d.model_id }}</title>
<style>{{ style }}</style></head><body>
<h1>Model card: {{ d.model_id }}</h1>
<p>{{ d.description }}</p>
<table>
<tr><th>Task</th><td><code>{{ d.task }}</code> ({{ d.kind }})</td></tr>
<tr><th>Model</th><td>{{ d.model_type }}, version {{ d.version }} ({{ d.status }})</td></tr>
<tr><th>Registered</th><td>{{ d.created }}</td></tr>
<tr><th>Code version</th><td>{{ d.code_version }}</td></tr>
<tr><th>Artifact SHA-256</th><td><code>{{ d.sha256 }}</code></td></tr>
<tr><th>Training data fingerprint</th><td><code>{{ d.data_fingerprint }}</code></td></tr>
</table>
<h2>Intended use</h2><p>{{ d.intended_use }}</p>
<h2>Data</h2><p>{{ d.data }}</p>
<h2>Performance</h2>
<table><tr><th>Metric</th><th>Split</th><th>Value</th><th>95% interval</th></tr>
{% for m in d.metrics %}<tr><td>{{ m.name }}</td><td>{{ m.split }}</td>
<td>{{ fmt(m.value) }}</td><td>{{ interval(m) }}</td></tr>
{% endfor %}</table>
<p>{% for name in images %}<img src="{{ image_base }}{{ name }}" alt="{{ name }}">{% endfor %}</p>
<h2>Subgroups</h2>
{% if gap %}<p>Largest gap: <strong>{{ fmt(gap[2]) }}</strong> in {{ gap[1] }} across
{{ gap[0] }} ({{ gap[3] }} lowest, {{ gap[4] }} highest).</p>
{% else %}<p>No subgroup comparison was possible.</p>{% endif %}
<table><tr><th>Attribute</th><th>Group</th><th>n</th><th>Metric</th><th>Value</th></tr>
{% for s in d.subgroups %}<tr><td>{{ s.attribute }}</td><td>{{ s.group }}</td><td>{{ s.n }}</td>
<td>{{ s.metric }}</td><td>{{ fmt(s.value) }}</td></tr>
{% endfor %}</table>
{% if d.features %}<h2>Most influential features</h2>
<table><tr><th>Feature</th><th>Importance</th></tr>
{% for name, value in d.features %}<tr><td>{{ name }}</td><td>{{ fmt(value) }}</td></tr>
{% endfor %}</table>{% endif %}
<h2>Limitations</h2><ul>{% for item in d.limitations %}<li>{{ item }}</li>{% endfor %}</ul>
<h2>TRIPOD+AI items covered</h2>
<ul>{% for item, where in tripod %}<li>{{ item }}: {{ where }}</li>{% endfor %}</ul>
</body></html>
"""


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3f}"


def _interval(row: MetricRow) -> str:
    if row.low is None or row.high is None:
        return "not estimated"
    return f"{_fmt(row.low)} - {_fmt(row.high)}"


def _render(template: str, data: CardData, image_base: str, *, html: bool) -> str:
    env = jinja2.Environment(autoescape=html, undefined=jinja2.StrictUndefined)
    return env.from_string(template).render(
        d=data,
        fmt=_fmt,
        interval=_interval,
        gap=data.largest_gap(),
        images=sorted(plots_names(data)),
        image_base=image_base,
        tripod=TRIPOD_ITEMS,
        style=markupsafe.Markup(CARD_STYLE),  # a constant of this module
    )


def plots_names(data: CardData) -> list[str]:
    """The file names of the card's plots (without drawing them)."""
    if data.kind == "classification":
        return ["calibration.png"] + (["roc.png"] if data.roc is not None else [])
    return ["residuals.png"] if data.residuals is not None else []


def render_markdown(data: CardData, image_base: str = "") -> str:
    """The card as Markdown; images are linked at `image_base` + file name."""
    return _render(_MARKDOWN, data, image_base, html=False)


def render_html(data: CardData, image_base: str = "") -> str:
    """The card as a standalone HTML page (every value escaped)."""
    return _render(_HTML, data, image_base, html=True)


def write_card(data: CardData, out: Path) -> list[Path]:
    """Write card.md, card.html and the PNG plots into folder `out`; returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in plots(data).items():
        (out / name).write_bytes(content)
        written.append(out / name)
    for name, text in (("card.md", render_markdown(data)), ("card.html", render_html(data))):
        (out / name).write_text(text, encoding="utf-8")
        written.append(out / name)
    return written


def created_text(epoch_ms: int) -> str:
    """A registry timestamp as an ISO instant."""
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="seconds")
