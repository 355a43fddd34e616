"""Charts and the offline report: spec contents, written files, and a real headless Chromium.

The browser test fails (never skips) without Chromium: CI installs it in scripts/test.sh,
and a report nobody has seen render is the failure this test exists to catch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from linklm.evaluation import charts, report

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SYSTEMS = [
    {"system": "model", "top1": 0.62, "throughput_mae": 21.5},
    {"system": "random", "top1": 0.04, "throughput_mae": None},
    {"system": "quietest", "top1": 0.31, "throughput_mae": None},
    {"system": "mean-throughput", "top1": None, "throughput_mae": 160.0},
]
CONFUSION = {
    "labels": ["5100-5195", "5200-5295", "invalid"],
    "matrix": [[5, 1, 2], [0, 7, 1], [0, 0, 0]],
}
SLICES = [
    {"column": "environment_type", "value": "urban", "n": 10, "top1": 0.5, "throughput_mae": 9.0},
    {"column": "environment_type", "value": "rural", "n": 12, "top1": 0.7, "throughput_mae": None},
    {"column": "channel_bandwidth_mhz", "value": "20", "n": 8, "top1": None, "throughput_mae": 4.0},
    {"column": "channel_bandwidth_mhz", "value": "80", "n": 9, "top1": 0.4, "throughput_mae": 6.0},
]
POINTS = [
    {"train_rows": rows, "system": "lora", "top1": top1, "throughput_mae": mae}
    for rows, top1, mae in [(1000, 0.2, 80.0), (10000, 0.5, None), (100000, 0.6, 20.0)]
]
REFERENCES = [
    {"system": "oracle", "top1": 1.0, "throughput_mae": 0.0},
    {"system": "random", "top1": 0.04, "throughput_mae": None},
]


def _predictions(n: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    truth = rng.uniform(1, 800, n)
    pred = truth * rng.normal(1, 0.1, n)
    frame = pl.DataFrame(
        {
            "true_throughput": truth,
            "pred_throughput": pred,
            "channel_bandwidth_mhz": rng.choice([20, 40, 80, 160], n),
        }
    )
    return frame.with_columns(  # every 10th row unanswered
        pl.when(pl.int_range(n) % 10 == 0)
        .then(None)
        .otherwise(pl.col("pred_throughput"))
        .alias("pred_throughput")
    )


def _layers(spec: dict) -> list[dict]:
    """Every unit spec (one mark) in a layered or concatenated spec."""
    nested = [s for key in ("layer", "hconcat", "vconcat", "concat") for s in spec.get(key, [])]
    if not nested:
        return [spec]
    return [unit for s in nested for unit in _layers(s)]


def _values(spec: dict, *path: str | int) -> list[dict]:
    """The data rows of the unit at ``path`` in ``spec``, inherited from a parent if unset."""
    node, data = spec, spec.get("data")
    for step in path:
        node = node[step]
        if isinstance(node, dict) and node.get("data"):
            data = node["data"]
    return data["values"] if "values" in data else spec["datasets"][data["name"]]


def _has_tooltip_and_titles(unit: dict) -> bool:
    enc = unit["encoding"]
    return "tooltip" in enc and all(enc[c].get("title") for c in ("x", "y") if c in enc)


def test_baseline_bars_drops_missing_metrics_and_ranks_best_first() -> None:
    spec = charts.baseline_bars(SYSTEMS).to_dict()
    assert spec["title"]
    top1, mae = spec["hconcat"]
    bars = top1["layer"][0]
    assert bars["mark"]["type"] == "bar"
    assert bars["encoding"]["x"]["title"] == "Top-1 channel accuracy (%)"
    top1_rows = _values(spec, "hconcat", 0, "layer", 0)
    assert [r["label"] for r in top1_rows] == ["model", "quietest", "random"]  # None dropped
    assert top1_rows[0]["value"] == pytest.approx(62.0)  # fraction drawn as percent
    assert bars["encoding"]["y"]["sort"] == ["model", "quietest", "random"]
    mae_rows = _values(spec, "hconcat", 1, "layer", 0)
    assert [r["label"] for r in mae_rows] == ["model", "mean-throughput"]  # lowest first
    assert mae["layer"][0]["encoding"]["x"]["title"] == "Throughput MAE (Mbps)"
    assert all(_has_tooltip_and_titles(u) for u in _layers(spec))


def test_baseline_bars_accepts_evaluate_system_dicts() -> None:
    nested = [
        {"name": "model", "kind": "model", "channel": {"top1": 0.5}, "throughput": {"mae": 9.0}},
        {"name": "mean", "kind": "baseline", "channel": None, "throughput": {"mae": 30.0}},
    ]
    spec = charts.baseline_bars(nested).to_dict()
    assert [r["label"] for r in _values(spec, "hconcat", 0, "layer", 0)] == ["model"]
    mae = _values(spec, "hconcat", 1, "layer", 0)
    assert [(r["label"], r["kind"]) for r in mae] == [("model", "model"), ("mean", "baseline")]
    assert spec["hconcat"][0]["layer"][0]["encoding"]["color"]["field"] == "kind"


def test_baseline_bars_keeps_one_panel_and_refuses_none() -> None:
    only_mae = [{"system": "mean", "top1": None, "throughput_mae": 3.0}]
    assert len(charts.baseline_bars(only_mae).to_dict()["hconcat"]) == 1
    with pytest.raises(ValueError, match="no system"):
        charts.baseline_bars([{"system": "x", "top1": None, "throughput_mae": None}])


def test_confusion_heatmap_cells_text_and_shape_check() -> None:
    spec = charts.confusion_heatmap(CONFUSION).to_dict()
    rect, text = spec["layer"]
    assert rect["mark"]["type"] == "rect" and text["mark"]["type"] == "text"
    assert rect["encoding"]["color"]["field"] == "count"
    assert text["encoding"]["text"]["field"] == "count"
    assert rect["encoding"]["x"]["sort"] == CONFUSION["labels"]
    cells = _values(spec, "layer", 0)
    assert {c["true"] for c in cells} == {"5100-5195", "5200-5295"}  # empty 'invalid' row gone
    assert {(c["true"], c["pred"], c["count"]) for c in cells} >= {("5100-5195", "invalid", 2)}
    assert "MHz" in rect["encoding"]["y"]["title"] and spec["title"]
    with pytest.raises(ValueError, match="3x3"):
        charts.confusion_heatmap({"labels": CONFUSION["labels"], "matrix": [[1, 2, 3]]})


def test_throughput_scatter_samples_and_draws_diagonal() -> None:
    spec = charts.throughput_scatter(_predictions(12000), max_points=5000, seed=3).to_dict()
    rule, points = spec["layer"]
    assert rule["mark"]["type"] == "rule" and points["mark"]["type"] == "circle"
    values = _values(spec, "layer", 1)
    assert len(values) == 5000
    assert all(v["pred_throughput"] is not None for v in values)
    assert points["encoding"]["x"]["title"] == "True throughput (Mbps)"
    assert points["encoding"]["color"]["title"] == "Channel bandwidth (MHz)"
    assert "5,000 of 10,800" in spec["title"]["subtitle"]
    again = charts.throughput_scatter(_predictions(12000), max_points=5000, seed=3).to_dict()
    assert _values(again, "layer", 1) == values  # seeded: the same page every time


def test_throughput_scatter_small_input_is_not_sampled() -> None:
    spec = charts.throughput_scatter(_predictions(50)).to_dict()
    assert len(_values(spec, "layer", 1)) == 45  # 5 unanswered rows left out


def test_slice_bars_one_panel_per_column() -> None:
    spec = charts.slice_bars(SLICES).to_dict()
    panels = spec["concat"]
    assert [p["title"] for p in panels] == ["Environment type", "Channel bandwidth (MHz)"]
    assert all(p["mark"]["type"] == "bar" for p in panels)
    assert [r["label"] for r in _values(spec, "concat", 1)] == ["80"]  # None dropped
    assert panels[0]["encoding"]["y"]["title"] == "Top-1 channel accuracy (%)"
    mae = charts.slice_bars(SLICES, metric="throughput_mae").to_dict()
    assert mae["concat"][0]["encoding"]["y"]["title"] == "Throughput MAE (Mbps)"
    assert all(_has_tooltip_and_titles(u) for u in _layers(spec))


def test_learning_curve_log_axis_and_reference_rules() -> None:
    spec = charts.learning_curve(POINTS, REFERENCES, metric="throughput_mae").to_dict()
    line, rules, labels = spec["layer"]
    assert line["mark"]["type"] == "line"
    assert line["encoding"]["x"]["scale"]["type"] == "log"
    assert [v["train_rows"] for v in _values(spec, "layer", 0)] == [1000, 100000]  # None dropped
    assert rules["mark"]["type"] == "rule" and labels["mark"]["type"] == "text"
    assert [r["label"] for r in _values(spec, "layer", 1)] == ["oracle"]
    assert line["encoding"]["y"]["title"] == "Throughput MAE (Mbps)"
    with pytest.raises(ValueError, match="positive"):
        charts.learning_curve([POINTS[0] | {"train_rows": 0}], REFERENCES)


def test_sweep_bars_ranks_and_skips_failed_runs() -> None:
    results = [
        {"name": "a", "eval_loss": 0.5, "lr": 1e-4},
        {"name": "b", "eval_loss": 0.2, "lr": 3e-4},
        {"name": "failed", "eval_loss": None, "lr": 1e-3},
    ]
    spec = charts.sweep_bars(results, "eval_loss").to_dict()
    assert [r["label"] for r in _values(spec, "layer", 0)] == ["b", "a"]  # lower loss is better
    assert _values(spec, "layer", 0)[0]["params"] == "lr=0.0003"
    ranked = charts.sweep_bars([{"name": "x", "top1": 0.1}, {"name": "y", "top1": 0.9}], "top1")
    assert [r["label"] for r in _values(ranked.to_dict(), "layer", 0)] == ["y", "x"]


def test_sweep_bars_keep_a_ranking_made_by_more_than_the_value() -> None:
    """The sweep ranks an error over more answered rows first: its chart agrees with its table."""
    table_order = [
        {"name": "all rows", "throughput_mae": 10.0},
        {"name": "half the rows", "throughput_mae": 5.0},
    ]
    spec = charts.sweep_bars(table_order, "throughput_mae", in_given_order=True).to_dict()
    assert [r["label"] for r in _values(spec, "layer", 0)] == ["all rows", "half the rows"]


def test_percent_axes_span_0_to_100_so_zero_bars_read_as_measured() -> None:
    spec = charts.slice_bars([{"column": "weather", "value": "rain", "n": 3, "top1": 0.0}])
    assert spec.to_dict()["concat"][0]["encoding"]["y"]["scale"] == {"domain": [0, 100]}


def test_a_rewritten_report_keeps_no_chart_of_the_earlier_one(tmp_path: Path) -> None:
    bars = charts.sweep_bars([{"name": "a", "top1": 0.5}], "top1")
    report.write_report(tmp_path, "first", "m", {"kept": bars, "dropped": bars})
    paths = report.write_report(tmp_path, "second", "m", {"kept": bars})
    assert sorted(p.name for p in (tmp_path / report.CHARTS_DIR).iterdir()) == [
        "kept.png",
        "kept.svg",
    ]
    assert paths["png:kept"].exists()
    report.write_report(tmp_path, "third", "no charts", {})
    assert not list((tmp_path / report.CHARTS_DIR).iterdir())
    assert '<body data-rendered="0">' in (tmp_path / "report.html").read_text()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """One 5-chart report shared by the file and browser tests (rendering takes seconds)."""
    out = tmp_path_factory.mktemp("report")
    chart_set = {
        "baselines": charts.baseline_bars(SYSTEMS),
        "confusion": charts.confusion_heatmap(CONFUSION),
        "throughput": charts.throughput_scatter(_predictions(300)),
        "slices": charts.slice_bars(SLICES),
        "learning_curve": charts.learning_curve(POINTS, REFERENCES),
    }
    markdown = "Intro.\n\n## Results\n\n| system | top-1 |\n|---|---|\n| model | 62 % |\n\n- one\n"
    return out, report.write_report(out, "Test report", markdown, chart_set)


def test_write_report_files_and_offline_html(written: tuple[Path, dict[str, Path]]) -> None:
    out, paths = written
    names = ["baselines", "confusion", "throughput", "slices", "learning_curve"]
    assert set(paths) == {"md", "html"} | {f"{k}:{n}" for k in ("png", "svg") for n in names}
    for name in names:
        assert paths[f"png:{name}"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert paths[f"svg:{name}"].read_text().lstrip().startswith("<svg")
    md = paths["md"].read_text()
    assert all(f"![{n}](charts/{n}.png)" in md for n in names)
    page = paths["html"].read_text()
    assert "<table>" in page and "<li>one</li>" in page
    assert report.html_has_no_remote_scripts(page)
    assert "cdn" not in page.lower()
    assert page.count(f'id="{report.BUNDLE_MARK}"') == 1
    assert page.count(report.javascript_bundle()) == 1  # inlined once, not per chart
    assert page.count(f'class="{report.CHART_CLASS}"') == len(names)
    assert not list(out.rglob("*.tmp-*"))  # no atomic-write leftovers


def test_remote_script_detector() -> None:
    assert not report.html_has_no_remote_scripts('<script src="https://cdn.x/vega.js"></script>')
    assert not report.html_has_no_remote_scripts('<script src="//cdn.jsdelivr.net/a.js"></script>')
    assert not report.html_has_no_remote_scripts('<link rel="stylesheet" href="http://x/a.css">')
    assert not report.html_has_no_remote_scripts('<script>import("https://x/m.js")</script>')
    assert report.html_has_no_remote_scripts(
        '<script>const ns = "http://www.w3.org/2000/svg"</script>'
    )
    assert report.html_has_no_remote_scripts('<a href="https://example.org">a link</a>')


@pytest.mark.parametrize("name", ["../evil", "a/b", "", "has space", ".hidden", "x" * 65, "ü"])
def test_write_report_refuses_unsafe_names(tmp_path: Path, name: str) -> None:
    chart = charts.sweep_bars([{"name": "a", "top1": 0.5}], "top1")
    with pytest.raises(ValueError, match="safe file stem"):
        report.write_report(tmp_path / "out", "t", "m", {name: chart})
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_markdown_raw_html_is_escaped() -> None:
    assert "<script>" not in report.markdown_to_html("hi <script>alert(1)</script>")


def test_report_renders_in_headless_chromium(written: tuple[Path, dict[str, Path]]) -> None:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium "
            "(sudo apt-get update && sudo apt-get install -y chromium); scripts/test.sh does this"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: bash scripts/setup.sh dev (it is in the dev extra)")
    _, paths = written
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on(
                "request",
                lambda r: r.url.startswith("file:") or problems.append(f"fetched {r.url}"),
            )
            page.goto(paths["html"].resolve().as_uri())
            page.wait_for_selector("body[data-rendered]", timeout=30_000)
            status = page.get_attribute("body", "data-rendered")
            drawn = page.evaluate(
                """(cls) => [...document.querySelectorAll('.' + cls)]
                     .map((div) => div.querySelectorAll('svg, canvas').length > 0)""",
                report.CHART_CLASS,
            )
        finally:
            browser.close()
    assert status == "5", f"report script said {status!r}; console: {problems}"
    assert drawn == [True] * 5
    assert problems == []


def test_the_vega_bundle_is_built_once_per_home_and_a_broken_copy_is_rebuilt(tmp_path, monkeypatch):
    import vl_convert

    monkeypatch.setenv("LINKLM_HOME", str(tmp_path))
    report.javascript_bundle.cache_clear()
    try:
        built = report.javascript_bundle()
        (cached,) = (tmp_path / "vega").glob(f"bundle-{vl_convert.__version__}-*.js")
        fresh = vl_convert.javascript_bundle(vl_version=report._vegalite_version())
        assert cached.read_text() == fresh
        cached.write_text(fresh.replace("vega", "VEGA", 1))  # a later process reads the file
        report.javascript_bundle.cache_clear()
        assert "VEGA" in report.javascript_bundle()
        cached.write_text(fresh[:5000])  # cut short: not a bundle, so it is built again
        report.javascript_bundle.cache_clear()
        assert report.javascript_bundle() == built and cached.read_text() == fresh
    finally:
        report.javascript_bundle.cache_clear()
