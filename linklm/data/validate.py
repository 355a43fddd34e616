"""Check rows against DATA_SPEC.md: types, ranges, categories, labels re-derived by physics.

``validate_path`` accepts a dataset folder (verified against its manifest first), a CSV in
the seed format (from this platform or any other tool) or a Parquet file in the working
schema. It reports every problem with its row number and scenario_id, writes bad rows to a
quarantine file with their problems, and summarises the distribution per category.
Severity 'error' breaks the contract (the row is quarantined); 'warning' marks a value that
is legal but outside the generator's table for its environment (real data may do that).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from linklm import atomic, schema
from linklm.data import dataset, reader, rules
from linklm.errors import ValidationFailed

REPORT_DIR = "validation"


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
    physics: dict = field(default_factory=dict)  # rules.agreement_summary
    physics_mode: str = "enforce"
    kept: pl.DataFrame | None = None  # the rows without errors, typed (``keep=True``)

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
            "physics_mode": self.physics_mode,
            "physics": self.physics,
            "files": self.files,
        }


JSON_LINES = (".jsonl", ".ndjson")


def _batches(path: Path) -> Iterator[tuple[pl.DataFrame, pl.DataFrame | None, pl.DataFrame]]:
    """(typed batch with _row, parse problems, original batch) for a folder, CSV, Parquet or
    JSON Lines file."""
    if path.is_dir():
        manifest = dataset.require_intact(path)
        offset = 0
        for chunk in dataset.chunk_paths(path, manifest):
            typed = pl.read_parquet(chunk)
            yield typed.with_columns((pl.int_range(pl.len()) + offset).alias("_row")), None, typed
            offset += typed.height
    elif path.suffix.lower() == ".parquet":
        typed = reader.typed_from_parquet(path)
        numbered = typed.with_columns(pl.int_range(pl.len()).alias("_row"))
        yield *reader.typed_value_problems(numbered), typed
    elif path.suffix.lower() in JSON_LINES:
        yield reader.parse_jsonl(path)
    else:
        text = reader.read_csv_text(path)
        typed, parse_problems = reader.parse_text_frame(text)
        yield typed, parse_problems, text


def physics_mode_of(folder: Path) -> rules.PhysicsMode:
    """How a dataset folder's rows are held to the physics: imported rows as their import
    chose (reported by default), generated rows strictly."""
    imported = dataset.read_manifest(folder).get("import") or {}
    return imported.get("physics_mode", "enforce")


def validate_path(
    path: str | Path,
    report_dir: str | Path | None = None,
    physics_mode: rules.PhysicsMode | None = None,
    keep: bool = False,
) -> ValidationResult:
    """Validate a dataset folder, CSV, Parquet or JSON Lines file; write report, problems
    and quarantine files.

    ``physics_mode`` (default: a folder's own, else "enforce") says whether disagreeing
    with the synthetic physics breaks the contract or is reported; ``keep`` returns the
    typed rows without errors in ``kept`` (an import writes them as its chunks)."""
    path = Path(path)
    if physics_mode is None:
        physics_mode = physics_mode_of(path) if path.is_dir() else "enforce"
    report_dir = (
        Path(report_dir)
        if report_dir
        else (
            path / REPORT_DIR
            if path.is_dir()
            else path.with_suffix("").with_name(path.stem + "-validation")
        )
    )
    # Per row, only the scenario_id (duplicates) and the throughput (its median) are kept
    # across batches, 16 bytes; everything else is counted per batch, so a 5M-row folder
    # validates in about the memory of one chunk plus 80 MB.
    problems, quarantined, ids, throughputs, rows = [], [], [], [], 0
    agreement: list[dict] = []
    kept: list[pl.DataFrame] = []
    counts: dict[str, Counter] = defaultdict(Counter)
    for typed, parse_problems, original in _batches(path):
        found = rules.check_frame(typed, parse_problems, physics_mode, agreement)
        problems.append(found)
        if keep:
            errors = found.filter(pl.col("severity") == "error")["row"]
            kept.append(typed.filter(~pl.col("_row").is_in(errors.implode())))
        rows += typed.height
        ids.append(typed["scenario_id"])
        for name in (*schema.STRATIFY_COLUMNS, "image_obstruction_type", "recommended_channel_mhz"):
            counts[name].update(dict(typed[name].value_counts().iter_rows()))
        throughputs.append(typed["expected_throughput_mbps"])
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
            text = _as_text(original)
            text = text.with_columns((pl.int_range(pl.len()) + typed["_row"].min()).alias("row"))
            quarantined.append(bad.join(text, on="row").sort("row"))
    found = pl.concat(problems) if problems else pl.DataFrame(schema=reader.PROBLEM_SCHEMA)
    all_ids = pl.concat(ids).to_frame().with_row_index("_row").cast({"_row": pl.Int64})
    dups = all_ids.filter(
        pl.col("scenario_id").is_not_null() & pl.col("scenario_id").is_duplicated()
    )
    if dups.height:
        dup_problems = rules.problem_rows(
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
        distribution=_distribution(counts),
        labels=_label_summary(pl.concat(throughputs), counts["recommended_channel_mhz"]),
        dataset_sha256=dataset.read_manifest(path)["dataset_sha256"] if path.is_dir() else None,
        physics=rules.agreement_summary(agreement),
        physics_mode=physics_mode,
    )
    if keep:
        bad = found.filter(pl.col("severity") == "error")["row"]
        good = pl.concat(kept) if kept else pl.DataFrame(schema=schema.POLARS_SCHEMA)
        result.kept = good.filter(~pl.col("_row").is_in(bad.implode())).select(schema.COLUMNS)
    _write_outputs(result, report_dir, [q for q in quarantined if q is not None and q.height])
    return result


def _as_text(original: pl.DataFrame) -> pl.DataFrame:
    """A batch's rows as the CSV's text cells (a CSV's own text as it is)."""
    from linklm.data.export import to_seed_csv_frame

    if all(dtype == pl.String for dtype in original.dtypes):
        return original
    return to_seed_csv_frame(original).cast(dict.fromkeys(schema.COLUMNS, pl.String))


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
    for typed, _, original in _batches(path):
        text = _as_text(original)
        text = text.with_columns((pl.int_range(pl.len()) + offset).alias("row"))
        frames.append(text.filter(pl.col("row").is_in(wanted)))
        offset += typed.height
    picked = pl.concat(frames)
    return picked.select(
        pl.col("row"),
        pl.lit("scenario_id: scenario_id appears more than once").alias("problems"),
        *schema.COLUMNS,
    )


def _distribution(counts: dict[str, Counter]) -> dict[str, dict[str, int]]:
    return {
        name: {str(k): int(v) for k, v in sorted(counts[name].items(), key=_nulls_first)}
        for name in (*schema.STRATIFY_COLUMNS, "image_obstruction_type")
    }


def _nulls_first(item: tuple) -> tuple:
    return (item[0] is not None, item[0] if item[0] is not None else 0)


def _label_summary(throughput: pl.Series, channels: Counter) -> dict[str, dict[str, float]]:
    tput = throughput.drop_nulls().drop_nans()
    channels = Counter({c: n for c, n in channels.items() if c is not None})
    most = max(channels.values(), default=0)
    return {
        "expected_throughput_mbps": {
            "mean": float(tput.mean() or 0.0),
            "median": float(tput.median() or 0.0),
            "min": float(tput.min() or 0.0),
            "max": float(tput.max() or 0.0),
        },
        "recommended_channel_mhz": {
            "distinct": len(channels),
            "most_frequent": int(min(c for c, n in channels.items() if n == most)) if most else 0,
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
    return "\n".join(lines + physics_lines(result.physics, result.physics_mode)) + "\n"


def physics_lines(agreement: dict, mode: str) -> list[str]:
    """The report's section on how far the labels agree with the synthetic physics."""
    if not agreement:
        return []
    how = (
        "enforced: a row that disagrees breaks the contract"
        if mode == "enforce"
        else "reported: rows that disagree are kept (measured links need not follow it)"
    )
    lines = [
        "",
        "## Agreement with the synthetic physics",
        "",
        f"- {how}",
        f"- of {agreement['rows_checked']} rows whose inputs passed: "
        f"{rules.share_percent(agreement['agree_share'])} have every label the physics "
        f"re-derives; channel {rules.share_percent(agreement['channel_agree_share'])}, "
        f"throughput {rules.share_percent(agreement['throughput_agree_share'])}",
    ]
    for key, what, unit in (
        ("channel_off_mhz", "channel", "MHz"),
        ("throughput_off_mbps", "throughput", "Mbps"),
    ):
        off = agreement[key]
        if off["rows"]:
            lines.append(
                f"- where the {what} disagrees ({off['rows']} rows) it is off by "
                f"{off['median']:.1f} {unit} (median), {off['p90']:.1f} (p90), "
                f"{off['max']:.1f} (max)"
            )
    return lines


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
