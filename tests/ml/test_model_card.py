"""Model card rendering from card data: Markdown, HTML (escaped), PNGs, subgroup gap."""

from __future__ import annotations

from pathlib import Path

from carebase.ml.model_card import (
    TRIPOD_ITEMS,
    CardData,
    MetricRow,
    SubgroupRow,
    plots,
    render_html,
    render_markdown,
    write_card,
)

PNG = b"\x89PNG\r\n\x1a\n"


def _data(kind: str = "classification") -> CardData:
    return CardData(
        model_id="t2d_onset_3y-v1", version=1, task="t2d_onset_3y", kind=kind,
        model_type="logistic", status="active", created="2026-11-28T12:00:00+00:00",
        code_version="0.1.0+gabc", sha256="a" * 64, data_fingerprint="b" * 64,
        description="Type 2 diabetes <b>within</b> 3 years", intended_use="Screening support.",
        data="Synthetic adults.", limitations=["Synthetic data only."],
        metrics=[MetricRow("AUROC", 0.81, 0.77, 0.85), MetricRow("Brier", 0.12)],
        calibration=[(0.1, 0.08), (0.4, 0.45)],
        roc=([0.0, 0.3, 1.0], [0.0, 0.8, 1.0]),
        residuals=([7.0, 8.0], [0.1, -0.2]) if kind == "regression" else None,
        subgroups=[SubgroupRow("sex", "female", 120, "AUROC", 0.79),
                   SubgroupRow("sex", "male", 110, "AUROC", 0.84),
                   SubgroupRow("age", "18-44", 50, "AUROC", 0.70),
                   SubgroupRow("age", "65+", 60, "AUROC", 0.86)],
    )  # fmt: skip


def test_largest_gap_is_the_widest_spread() -> None:
    assert _data().largest_gap() == ("age", "AUROC", 0.86 - 0.70, "18-44", "65+")


def test_markdown_has_every_section_and_interval() -> None:
    text = render_markdown(_data(), image_base="img/")
    for heading in ("## Intended use", "## Data", "## Performance", "## Subgroups",
                    "## Limitations", "## TRIPOD+AI items covered"):  # fmt: skip
        assert heading in text
    assert "| AUROC | held-out | 0.810 | 0.770 - 0.850 |" in text
    assert "| Brier | held-out | 0.120 | not estimated |" in text
    assert "![calibration.png](img/calibration.png)" in text and "img/roc.png" in text
    assert "Largest gap: **0.160** in AUROC across age" in text
    assert all(item in text for item, _ in TRIPOD_ITEMS)


def test_html_escapes_and_links_plots() -> None:
    html = render_html(_data())
    assert "&lt;b&gt;within&lt;/b&gt;" in html and "<b>within" not in html
    assert '<img src="calibration.png"' in html and '<img src="roc.png"' in html


def test_plots_are_pngs_and_regression_gets_residuals(tmp_path: Path) -> None:
    images = plots(_data())
    assert sorted(images) == ["calibration.png", "roc.png"]
    assert all(content.startswith(PNG) for content in images.values())
    assert sorted(plots(_data("regression"))) == ["residuals.png"]
    written = write_card(_data("regression"), tmp_path / "card")
    assert sorted(p.name for p in written) == ["card.html", "card.md", "residuals.png"]
    assert "residuals.png" in (tmp_path / "card" / "card.md").read_text()
