"""Check rows against DATA_SPEC.md: types, ranges, categories, labels re-derived by physics.

``validate_path`` accepts a dataset folder (verified against its manifest first), a CSV in
the seed format (from this platform or any other tool) or a Parquet file in the working
schema. It reports every problem with its row number and scenario_id, writes bad rows to a
quarantine file with their problems, and summarises the distribution per category.
Severity 'error' breaks the contract (the row is quarantined); 'warning' marks a value that
is legal but outside the generator's table for its environment (real data may do that).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from linklm import atomic, dataset, physics, reader, schema
from linklm.errors import ValidationFailed

TOL = 0.051  # stored inputs are rounded to 0.1; allow that rounding in range checks
LABEL_TOL = {
    "expected_throughput_mbps": (0.01, 1e-4),
    "rssi_dbm": (0.011, 0.0),
    "snr_db": (0.011, 0.0),
}
REPORT_DIR = "validation"


def _between(name: str, lo: float, hi: float, tol: float = 0.0) -> pl.Expr:
    return pl.col(name).is_between(lo - tol, hi + tol)


def _env_table(table: dict[tuple[str, str], tuple[float, float]], idx: int) -> pl.Expr:
    key = pl.concat_str(["environment_type", "area_density"], separator="/")
    mapping = {f"{e}/{d}": float(v[idx]) for (e, d), v in table.items()}
    return key.replace_strict(mapping, default=None, return_dtype=pl.Float64)


@dataclass(frozen=True)
class Check:
    column: str
    check: str
    ok: pl.Expr
    message: str
    severity: str = "error"


def _coordinate_checks(name: str) -> list[Check]:
    c = pl.col(name)
    return [
        Check(name, "shape", c.list.len() == 3, "must be [lat, lon, elevation_m]"),
        Check(
            name,
            "range",
            c.list.get(0, null_on_oob=True).is_between(*schema.LAT_RANGE)
            if name.startswith("device_a")
            else pl.lit(True),
            f"latitude outside {schema.LAT_RANGE}",
        ),
        Check(
            name,
            "range",
            c.list.get(1, null_on_oob=True).is_between(*schema.LON_RANGE)
            if name.startswith("device_a")
            else pl.lit(True),
            f"longitude outside {schema.LON_RANGE}",
        ),
        Check(
            name,
            "range",
            c.list.get(2, null_on_oob=True).is_between(*schema.ELEVATION_RANGE),
            f"elevation outside {schema.ELEVATION_RANGE} m",
        ),
    ]


def row_checks() -> list[Check]:
    """Every per-row rule of the contract, as polars expressions (True = row passes)."""
    a, b = pl.col("device_a_coordinates"), pl.col("device_b_coordinates")
    chans = pl.col("available_channels_mhz")
    off = schema.B_OFFSET_DEG + 1e-6
    grid = list(schema.CHANNEL_GRID_MHZ)
    checks = [
        *_coordinate_checks("device_a_coordinates"),
        *_coordinate_checks("device_b_coordinates"),
        Check(
            "device_b_coordinates",
            "range",
            ((b.list.get(0, null_on_oob=True) - a.list.get(0, null_on_oob=True)).abs() <= off)
            & ((b.list.get(1, null_on_oob=True) - a.list.get(1, null_on_oob=True)).abs() <= off),
            f"more than {schema.B_OFFSET_DEG} degrees from device A",
        ),
        Check("link_distance_m", "range", pl.col("link_distance_m") >= 0, "negative distance"),
        Check(
            "noise_floor_dbm",
            "range",
            _between("noise_floor_dbm", -115, -82, TOL),
            "outside -115..-82 dBm",
        ),
        Check(
            "noise_floor_dbm",
            "table",
            pl.col("noise_floor_dbm").is_between(
                _env_table(schema.NOISE_FLOOR_RANGE, 0) - TOL,
                _env_table(schema.NOISE_FLOOR_RANGE, 1) + TOL,
            ),
            "outside the generator's range for its environment/density",
            "warning",
        ),
        Check(
            "noise_dbm",
            "range",
            (pl.col("noise_dbm") - pl.col("noise_floor_dbm")).is_between(-TOL, 8 + TOL),
            "must be noise_floor_dbm + 0..8 dB",
        ),
        Check(
            "tx_power_dbm",
            "range",
            _between("tx_power_dbm", *schema.TX_POWER_RANGE, TOL),
            f"outside {schema.TX_POWER_RANGE} dBm",
        ),
        Check(
            "channel_bandwidth_mhz",
            "category",
            pl.col("channel_bandwidth_mhz").is_in(schema.BANDWIDTHS),
            f"not one of {list(schema.BANDWIDTHS)}",
        ),
        Check(
            "channel_utilization_pct",
            "range",
            _between("channel_utilization_pct", 0, 100),
            "outside 0..100 %",
        ),
        Check(
            "channel_utilization_pct",
            "table",
            pl.col("channel_utilization_pct").is_between(
                _env_table(schema.UTILIZATION_RANGE, 0) - TOL,
                _env_table(schema.UTILIZATION_RANGE, 1) + TOL,
            ),
            "outside the generator's range for its environment/density",
            "warning",
        ),
        Check(
            "fresnel_clear_pct", "range", _between("fresnel_clear_pct", 0, 100), "outside 0..100 %"
        ),
        Check(
            "fresnel_clear_pct",
            "table",
            pl.col("fresnel_clear_pct").is_between(
                _env_table(schema.FRESNEL_RANGE, 0) - TOL, _env_table(schema.FRESNEL_RANGE, 1) + TOL
            ),
            "outside the generator's range for its environment/density",
            "warning",
        ),
        Check(
            "weather_temp_c",
            "range",
            _between("weather_temp_c", *schema.TEMP_RANGE, TOL),
            f"outside {schema.TEMP_RANGE} C",
        ),
        Check(
            "weather_humidity_pct",
            "range",
            _between("weather_humidity_pct", *schema.HUMIDITY_RANGE, TOL),
            f"outside {schema.HUMIDITY_RANGE} %",
        ),
        Check(
            "available_channels_mhz",
            "count",
            chans.list.len().is_between(schema.MIN_CHANNELS, schema.MAX_CHANNELS),
            f"must list {schema.MIN_CHANNELS}..{schema.MAX_CHANNELS} channels",
        ),
        Check(
            "available_channels_mhz",
            "grid",
            chans.list.eval(pl.element().is_in(grid)).list.all(),
            "a channel is not on the 4900, 4905, ..., 6100 MHz grid",
        ),
        Check(
            "available_channels_mhz",
            "order",
            chans.list.eval(pl.element().diff().drop_nulls() > 0).list.all(),
            "channels must be distinct and ascending",
        ),
        Check(
            "spectral_scan_dbm",
            "shape",
            pl.col("spectral_scan_dbm").list.len() == chans.list.len(),
            "needs one entry per available channel",
        ),
        Check(
            "spectral_scan_dbm",
            "range",
            (pl.col("spectral_scan_dbm").list.min() - pl.col("noise_floor_dbm"))
            >= schema.SCAN_FLOOR_OFFSET_DB - TOL,
            "a reading is less than noise_floor_dbm + 2 dB",
        ),
        Check(
            "image_obstruction_type",
            "category",
            pl.col("image_obstruction_type").is_in(schema.OBSTRUCTION_TYPES),
            f"not one of {list(schema.OBSTRUCTION_TYPES)}",
        ),
        Check(
            "image_obstruction_type",
            "consistency",
            pl.col("image_obstruction_detected") | (pl.col("image_obstruction_type") == "None"),
            "must be None when no obstruction is detected",
        ),
        Check(
            "recommended_channel_mhz",
            "membership",
            chans.list.contains(pl.col("recommended_channel_mhz")),
            "not one of the row's available channels",
        ),
        Check(
            "expected_throughput_mbps",
            "range",
            (pl.col("expected_throughput_mbps") > 0)
            & (pl.col("expected_throughput_mbps") <= 10 * pl.col("channel_bandwidth_mhz")),
            "must be in (0, 10 x bandwidth]",
        ),
    ]
    for name in ("weather_condition", "environment_type", "area_density"):
        checks.append(
            Check(
                name,
                "category",
                pl.col(name).is_in(schema.CATEGORIES[name]),
                f"not one of {list(schema.CATEGORIES[name])}",
            )
        )
    return checks


def _check_problems(frame: pl.DataFrame) -> list[pl.DataFrame]:
    out = []
    for chk in row_checks():
        bad = frame.filter(~chk.ok.fill_null(True))
        if bad.height:
            out.append(
                bad.select(
                    pl.col("_row").alias("row"),
                    pl.col("scenario_id"),
                    pl.lit(chk.column).alias("column"),
                    pl.lit(chk.check).alias("check"),
                    pl.lit(chk.severity).alias("severity"),
                    pl.lit(chk.message).alias("message"),
                )
            )
    if "_scan_keys" in frame.columns:
        bad = frame.filter(
            (pl.col("_scan_keys") != pl.col("available_channels_mhz")).fill_null(False)
        )
        out.append(
            _fixed(
                bad,
                "spectral_scan_dbm",
                "keys",
                "map keys must be exactly the available channels, in order",
            )
        )
    return out


def _fixed(frame: pl.DataFrame, column: str, check: str, message: str) -> pl.DataFrame:
    return frame.select(
        pl.col("_row").alias("row"),
        pl.col("scenario_id"),
        pl.lit(column).alias("column"),
        pl.lit(check).alias("check"),
        pl.lit("error").alias("severity"),
        pl.lit(message).alias("message"),
    )


def _label_problems(frame: pl.DataFrame) -> list[pl.DataFrame]:
    """Re-derive labels with the physics on rows whose inputs passed every check."""
    if frame.height == 0:
        return []
    labels = physics.oracle_labels(
        frame, labelled_channel=frame["recommended_channel_mhz"].to_numpy()
    )
    tie_ok = labels.labelled_score >= labels.best_score - 1e-9
    rows = [
        (
            "recommended_channel_mhz",
            ~tie_ok,
            labels.recommended_channel_mhz,
            "is not the channel the physics recommends",
        )
    ]
    for name, expected in (
        ("expected_throughput_mbps", labels.expected_throughput_mbps),
        ("rssi_dbm", labels.rssi_dbm),
        ("snr_db", labels.snr_db),
    ):
        abs_tol, rel_tol = LABEL_TOL[name]
        got = frame[name].to_numpy()
        bad = np.abs(got - expected) > abs_tol + rel_tol * np.abs(expected)
        rows.append((name, bad, expected, "disagrees with the physics"))
    out = []
    for name, bad, expected, what in rows:
        if bad.any():
            sub = frame.filter(pl.Series(bad))
            exp = np.asarray(expected)[bad]
            out.append(
                sub.select(
                    pl.col("_row").alias("row"),
                    pl.col("scenario_id"),
                    pl.lit(name).alias("column"),
                    pl.lit("physics").alias("check"),
                    pl.lit("error").alias("severity"),
                    pl.format(
                        f"{{}} {what} (expected {{}})",
                        pl.col(name),
                        pl.Series(np.round(exp, 3)).cast(pl.String),
                    ).alias("message"),
                )
            )
    return out


def check_frame(frame: pl.DataFrame, parse_problems: pl.DataFrame | None = None) -> pl.DataFrame:
    """All problems of one typed batch (with a ``_row`` column)."""
    problems = [parse_problems] if parse_problems is not None else []
    problems += _check_problems(frame)
    # distance needs well-formed coordinates
    coords_ok = (
        frame.select(
            (pl.col("device_a_coordinates").list.len() == 3)
            & (pl.col("device_b_coordinates").list.len() == 3)
        )
        .to_series()
        .fill_null(False)
    )
    sub = frame.filter(coords_ok & pl.col("link_distance_m").is_not_null())
    if sub.height:
        a = np.array(sub["device_a_coordinates"].to_list(), dtype=float)
        b = np.array(sub["device_b_coordinates"].to_list(), dtype=float)
        expected = physics.haversine_m(a, b)
        bad = np.abs(sub["link_distance_m"].to_numpy() - expected) > 1.0 + 1e-4 * expected
        if bad.any():
            problems.append(
                _fixed(
                    sub.filter(pl.Series(bad)),
                    "link_distance_m",
                    "haversine",
                    "is not the haversine distance between A and B",
                )
            )
    errors = (
        pl.concat([p.cast(reader.PROBLEM_SCHEMA) for p in problems])
        if problems
        else pl.DataFrame(schema=reader.PROBLEM_SCHEMA)
    )
    bad_rows = errors.filter(pl.col("severity") == "error")["row"].unique()
    clean = frame.filter(~pl.col("_row").is_in(bad_rows.implode()))
    label_problems = _label_problems(clean)
    if label_problems:
        errors = pl.concat([errors, *(p.cast(reader.PROBLEM_SCHEMA) for p in label_problems)])
    return errors


@dataclass
class ValidationResult:
    source: str
    rows: int
    bad_rows: int
    problems: pl.DataFrame
    distribution: dict[str, dict[str, int]]
    labels: dict[str, dict[str, float]]
    files: dict[str, str] = field(default_factory=dict)
    dataset_sha256: str | None = None

    @property
    def error_rate(self) -> float:
        return self.bad_rows / self.rows if self.rows else 0.0

    def counts_by_check(self) -> list[dict]:
        return (
            self.problems.group_by("severity", "column", "check")
            .agg(pl.len().alias("count"), pl.col("message").first().alias("example"))
            .sort("severity", "count", descending=[False, True])
            .to_dicts()
        )

    def summary(self) -> dict:
        return {
            "source": self.source,
            "dataset_sha256": self.dataset_sha256,
            "rows": self.rows,
            "bad_rows": self.bad_rows,
            "error_rate": self.error_rate,
            "warnings": int((self.problems["severity"] == "warning").sum()),
            "problems_by_check": self.counts_by_check(),
            "distribution": self.distribution,
            "labels": self.labels,
            "files": self.files,
        }


def _batches(path: Path) -> Iterator[tuple[pl.DataFrame, pl.DataFrame | None, pl.DataFrame]]:
    """(typed batch with _row, parse problems, original batch) for a folder, CSV or Parquet."""
    if path.is_dir():
        manifest = dataset.require_intact(path)
        offset = 0
        for chunk in dataset.chunk_paths(path, manifest):
            typed = pl.read_parquet(chunk)
            yield typed.with_columns((pl.int_range(pl.len()) + offset).alias("_row")), None, typed
            offset += typed.height
    elif path.suffix.lower() == ".parquet":
        typed = reader.typed_from_parquet(path)
        yield typed.with_columns(pl.int_range(pl.len()).alias("_row")), None, typed
    else:
        text = reader.read_csv_text(path)
        typed, parse_problems = reader.parse_text_frame(text)
        yield typed, parse_problems, text


def validate_path(path: str | Path, report_dir: str | Path | None = None) -> ValidationResult:
    """Validate a dataset folder, CSV or Parquet; write report, problems and quarantine files."""
    path = Path(path)
    report_dir = (
        Path(report_dir)
        if report_dir
        else (
            path / REPORT_DIR
            if path.is_dir()
            else path.with_suffix("").with_name(path.stem + "-validation")
        )
    )
    problems, quarantined, ids, dist_frames, label_frames, rows = [], [], [], [], [], 0
    for typed, parse_problems, original in _batches(path):
        found = check_frame(typed, parse_problems)
        problems.append(found)
        rows += typed.height
        ids.append(typed.select("_row", "scenario_id"))
        dist_frames.append(typed.select(*schema.STRATIFY_COLUMNS, "image_obstruction_type"))
        label_frames.append(typed.select(*schema.LABEL_COLUMNS))
        bad = (
            found.filter(pl.col("severity") == "error")
            .group_by("row")
            .agg(
                pl.format("{}: {}", pl.col("column"), pl.col("message"))
                .str.join("; ")
                .alias("problems")
            )
        )
        if bad.height:
            text = original if parse_problems is not None else _as_text(original)
            text = text.with_columns((pl.int_range(pl.len()) + typed["_row"].min()).alias("row"))
            quarantined.append(bad.join(text, on="row").sort("row"))
    found = pl.concat(problems) if problems else pl.DataFrame(schema=reader.PROBLEM_SCHEMA)
    all_ids = pl.concat(ids)
    dups = all_ids.filter(
        pl.col("scenario_id").is_not_null() & pl.col("scenario_id").is_duplicated()
    )
    if dups.height:
        dup_problems = _fixed(
            dups, "scenario_id", "duplicate", "scenario_id appears more than once"
        ).cast(reader.PROBLEM_SCHEMA)
        found = pl.concat([found, dup_problems])
        dup_rows = set(dups["_row"].to_list())
        # duplicated rows without other errors still need quarantining: take them from the source again
        quarantined.append(_rows_as_text(path, dup_rows, found))
    found = found.sort("row", "column")
    bad_rows = found.filter(pl.col("severity") == "error")["row"].n_unique()
    result = ValidationResult(
        source=str(path),
        rows=rows,
        bad_rows=bad_rows,
        problems=found,
        distribution=_distribution(pl.concat(dist_frames)),
        labels=_label_summary(pl.concat(label_frames)),
        dataset_sha256=dataset.read_manifest(path)["dataset_sha256"] if path.is_dir() else None,
    )
    _write_outputs(result, report_dir, [q for q in quarantined if q is not None and q.height])
    return result


def _as_text(typed: pl.DataFrame) -> pl.DataFrame:
    from linklm.export import to_seed_csv_frame

    return to_seed_csv_frame(typed).cast(dict.fromkeys(schema.COLUMNS, pl.String))


def _rows_as_text(path: Path, rows: set[int], problems: pl.DataFrame) -> pl.DataFrame | None:
    already = set(
        problems.filter((pl.col("severity") == "error") & (pl.col("check") != "duplicate"))[
            "row"
        ].to_list()
    )
    wanted = sorted(rows - already)
    if not wanted:
        return None
    frames = []
    offset = 0
    for typed, parse_problems, original in _batches(path):
        text = original if parse_problems is not None else _as_text(original)
        text = text.with_columns((pl.int_range(pl.len()) + offset).alias("row"))
        frames.append(text.filter(pl.col("row").is_in(wanted)))
        offset += typed.height
    picked = pl.concat(frames)
    return picked.select(
        pl.col("row"),
        pl.lit("scenario_id: scenario_id appears more than once").alias("problems"),
        *schema.COLUMNS,
    )


def _distribution(frame: pl.DataFrame) -> dict[str, dict[str, int]]:
    out = {}
    for name in (*schema.STRATIFY_COLUMNS, "image_obstruction_type"):
        counts = frame.group_by(name).len().sort(name)
        out[name] = {str(k): int(v) for k, v in counts.iter_rows()}
    return out


def _label_summary(frame: pl.DataFrame) -> dict[str, dict[str, float]]:
    tput = frame["expected_throughput_mbps"].drop_nulls().drop_nans()
    ch = frame["recommended_channel_mhz"].drop_nulls()
    return {
        "expected_throughput_mbps": {
            "mean": float(tput.mean() or 0.0),
            "median": float(tput.median() or 0.0),
            "min": float(tput.min() or 0.0),
            "max": float(tput.max() or 0.0),
        },
        "recommended_channel_mhz": {
            "distinct": int(ch.n_unique()),
            "most_frequent": int(ch.mode().sort()[0]) if ch.len() else 0,
        },
    }


def _write_outputs(
    result: ValidationResult, report_dir: Path, quarantined: list[pl.DataFrame]
) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    problems_path = report_dir / "problems.csv"
    with atomic.atomic_path(problems_path) as tmp:
        result.problems.write_csv(tmp)
    quarantine_path = report_dir / "quarantine.csv"
    with atomic.atomic_path(quarantine_path) as tmp:
        if quarantined:
            pl.concat(quarantined, how="diagonal_relaxed").unique("row", keep="first").sort(
                "row"
            ).write_csv(tmp)
        else:
            pl.DataFrame(
                schema={
                    "row": pl.Int64,
                    "problems": pl.String,
                    **dict.fromkeys(schema.COLUMNS, pl.String),
                }
            ).write_csv(tmp)
    result.files = {
        "report_json": str(report_dir / "report.json"),
        "report_md": str(report_dir / "report.md"),
        "problems_csv": str(problems_path),
        "quarantine_csv": str(quarantine_path),
    }
    atomic.write_json(report_dir / "report.json", result.summary())
    atomic.write_text(report_dir / "report.md", to_markdown(result))


def to_markdown(result: ValidationResult) -> str:
    lines = [
        f"# Validation of `{result.source}`",
        "",
        f"- rows: **{result.rows}**",
        f"- rows breaking the contract (quarantined): **{result.bad_rows}** ({result.error_rate:.2%})",
        f"- warnings: {int((result.problems['severity'] == 'warning').sum())}",
        "",
    ]
    by_check = result.counts_by_check()
    if by_check:
        lines += [
            "## Problems",
            "",
            "| severity | column | check | count | example |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['severity']} | {r['column']} | {r['check']} | {r['count']} | {r['example']} |"
            for r in by_check
        ]
        lines.append("")
    lines += ["## Distribution", ""]
    for name, counts in result.distribution.items():
        total = sum(counts.values()) or 1
        lines.append(
            f"- **{name}**: " + ", ".join(f"{k} {v} ({v / total:.1%})" for k, v in counts.items())
        )
    t = result.labels["expected_throughput_mbps"]
    c = result.labels["recommended_channel_mhz"]
    lines += [
        "",
        "## Labels",
        "",
        f"- expected_throughput_mbps: mean {t['mean']:.1f}, median {t['median']:.2f}, min {t['min']:.3f}, max {t['max']:.1f}",
        f"- recommended_channel_mhz: {c['distinct']} distinct, most frequent {c['most_frequent']} MHz",
    ]
    return "\n".join(lines) + "\n"


def current_summary(out_dir: Path, dataset_sha: str) -> dict | None:
    """The validation summary of a dataset folder if it was made for this exact dataset."""
    summary = atomic.read_json_or_none(Path(out_dir) / REPORT_DIR / "report.json")
    if not summary or summary.get("dataset_sha256") != dataset_sha:
        return None
    if not all(Path(p).exists() for p in summary.get("files", {}).values()):
        return None
    return summary


def quarantined_ids(summary_or_dir: dict | Path) -> list[int]:
    """scenario_ids of rows with errors, read back from problems.csv."""
    files = (
        summary_or_dir["files"]
        if isinstance(summary_or_dir, dict)
        else {"problems_csv": str(Path(summary_or_dir) / REPORT_DIR / "problems.csv")}
    )
    problems = pl.read_csv(files["problems_csv"], schema_overrides=reader.PROBLEM_SCHEMA)
    bad = problems.filter(pl.col("severity") == "error")["scenario_id"].drop_nulls().unique().sort()
    return bad.to_list()


def enforce(summary: dict, max_error_rate: float) -> None:
    """Raise ValidationFailed naming the first problems when too many rows are bad."""
    rows, bad = summary["rows"], summary["bad_rows"]
    rate = bad / rows if rows else 0.0
    if rate <= max_error_rate:
        return
    files = summary["files"]
    problems = pl.read_csv(files["problems_csv"], schema_overrides=reader.PROBLEM_SCHEMA)
    errors = problems.filter(pl.col("severity") == "error").head(5)
    first = "; ".join(
        f"row {r['row']} (scenario_id {r['scenario_id']}) {r['column']}: {r['message']}"
        for r in errors.to_dicts()
    )
    raise ValidationFailed(
        f"{summary['source']}: {bad} of {rows} rows ({rate:.2%}) break the contract, above "
        f"max_error_rate {max_error_rate:.2%}; first: {first}; full list in "
        f"{files['problems_csv']}, rows in {files['quarantine_csv']}"
    )
