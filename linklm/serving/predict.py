"""Answer a planner's question with a trained model: which channel, and what throughput?

``Predictor`` loads a model once (a run folder, a model folder, a registered name, or
``champion`` from the retraining registry) and scores link scenarios given with the input
columns of DATA_SPEC.md; label columns and rssi_dbm/snr_db are optional and ignored. Inputs
are checked with the validator's own rules: a row with a bad input is reported by
scenario_id and skipped, never crashes the batch. Guardrails mark an answer invalid when
its channel is not one of the row's available channels or its throughput is outside
(0, 10 x bandwidth]; with ``fallback="heuristic"`` such a row gets the quietest available
channel instead (and says so in ``source``).
"""

from __future__ import annotations

import io
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import fsspec
import numpy as np
import polars as pl

from linklm import schema
from linklm.config import PredictConfig
from linklm.data import dataset, reader, rules
from linklm.errors import LinkLMError, SchemaError, first_line
from linklm.evaluation import baselines
from linklm.model import answers, devices, models
from linklm.model.runs import RUN_FILE, run_weights
from linklm.serving.predict_io import check_protocol, local_path

Fallback = Literal["none", "heuristic", "ranked"]
log = logging.getLogger(__name__)

TOP_K = 3
BLOCK_ROWS = 4096  # rows answered between two progress lines
CHAMPION = "champion"
OPTIONAL_COLUMNS = ("scenario_id", *schema.LABEL_COLUMNS, *schema.LEAKY_COLUMNS)
# placeholders let the validator's parser read a frame without the optional columns; their
# problems are dropped below, so a placeholder can never make or break a row
_PLACEHOLDER = {"scenario_id": "", "recommended_channel_mhz": "0"}


class PredictError(LinkLMError):
    """The model or the input cannot be used at all (single bad rows are reported instead)."""


def without_champion(name: str, registry_path: str | Path | None = None) -> str:
    """'champion' as the run folder the registry names now (read once; the store's
    registry when a store is set, and the run fetched from it when it was trained on another
    machine); any other name as given. A CLI pins it before Prefect starts, so the flow
    serves the run it checked."""
    if name != CHAMPION:
        return name
    from linklm.serving import registry

    return str(registry.champion_run_dir(registry.location(registry_path)))


def model_folder(name: str, registry_path: str | Path | None = None) -> str:
    """What ``models.load`` takes for a run folder, a model folder, a name or 'champion'."""
    run_dir = Path(without_champion(name, registry_path)).expanduser()
    if (run_dir / RUN_FILE).exists():
        weights = run_weights(run_dir)
        if weights is None:
            raise PredictError(f"{run_dir}: the run has neither model/ nor adapter/")
        return str(weights)
    return name


def check_top_k(top_k: int) -> None:
    """k ranked candidates are written per row; no row can have more than the grid."""
    grid = len(schema.CHANNEL_GRID_MHZ)
    if not 1 <= top_k <= grid:
        raise PredictError(
            f"top_k {top_k}: must be 1..{grid} (the channels of the 5 GHz grid); a row lists "
            f"at most {schema.MAX_CHANNELS} available channels"
        )


def require_input_columns(columns: list[str], source: str) -> None:
    missing = [c for c in schema.INPUT_COLUMNS if c not in columns]
    if missing:
        raise SchemaError(
            f"{source}: missing input column(s) {missing}; DATA_SPEC.md's inputs are "
            f"{list(schema.INPUT_COLUMNS)}{reader.delimiter_hint(columns)}"
        )


JSON_CHECKED_BYTES = 64 * 2**20  # a larger JSON input's columns are checked when it is read


def _header_columns(path: Path) -> list[str] | None:
    """A local CSV's or Parquet file's columns from its header alone; a JSON input's from its
    records (it has no header), unless it is too large to read twice (None: not checked)."""
    suffix = path.suffix.lower()
    if suffix in (".json", ".jsonl", ".ndjson"):
        if path.stat().st_size > JSON_CHECKED_BYTES:
            return None
        return _text_of_json(path.read_bytes().decode("utf-8", errors="replace"), str(path)).columns
    try:
        if suffix == ".parquet":
            return list(pl.read_parquet_schema(path))
        return pl.read_csv(path, n_rows=0, infer_schema=False).columns
    except (pl.exceptions.PolarsError, OSError) as exc:
        kind = "Parquet" if suffix == ".parquet" else "CSV"
        raise SchemaError(f"{path}: not a readable {kind} file ({first_line(exc)})") from None


def check_source(source: str) -> None:
    """Fail before a model loads when a local input is not there, or its header lacks an
    input column (remote inputs: their filesystem package here; the rest when read)."""
    if source == "-":
        return
    path = local_path(source)
    if path is None:
        check_protocol(source)
        return
    if not path.exists():
        raise SchemaError(f"{source}: file not found")
    if path.is_dir():
        if not (path / "manifest.json").exists():
            raise SchemaError(f"{source}: a folder, but not a dataset (no manifest.json)")
        return
    if path.stat().st_size < 4096 and not path.read_bytes().strip():
        raise SchemaError(f"{source}: empty input")
    columns = _header_columns(path)
    if columns is not None:
        require_input_columns(columns, source)


# --- reading links ----------------------------------------------------------------------


def _whole(value):
    """5180.0 -> 5180: pandas writes integer lists as floats once a value is missing, and a
    channel "5180.0" is no key of the scan's map; a fraction stays for the check to name."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _scan_as_map(record: dict) -> dict:
    """A scan stored as a list aligned with the channels (Parquet) -> the CSV's map form,
    whole-number float channels (what pandas writes) read as the integers they are."""
    scan, channels = record.get("spectral_scan_dbm"), record.get("available_channels_mhz")
    if isinstance(channels, list):
        channels = [_whole(c) for c in channels]
        record = record | {"available_channels_mhz": channels}
    if isinstance(scan, list) and isinstance(channels, list) and len(scan) == len(channels):
        return record | {
            "spectral_scan_dbm": {str(c): v for c, v in zip(channels, scan, strict=True)}
        }
    return record


def records_to_text(records: list[dict]) -> pl.DataFrame:
    """JSON records -> a frame of text cells (lists and maps JSON-encoded, as in the CSV)."""

    def cell(value) -> str | None:
        if value is None:
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        return json.dumps(value)

    records = [_scan_as_map(r) for r in records]
    columns = list(dict.fromkeys(k for r in records for k in r))
    return pl.DataFrame(
        {c: [cell(r.get(c)) for r in records] for c in columns},
        schema={c: pl.String for c in columns},
    )


def _text_of_json(text: str, source: str) -> pl.DataFrame:
    stripped = text.strip()
    try:
        value = json.loads(stripped)
        records = value if isinstance(value, list) else [value]
    except json.JSONDecodeError:
        try:
            records = [json.loads(line) for line in stripped.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise SchemaError(f"{source}: not JSON or JSON lines ({exc})") from None
    if not records or not all(isinstance(r, dict) for r in records):
        raise SchemaError(f"{source}: expected one JSON object per link")
    return records_to_text(records)


def _text_of_csv(data: bytes, source: str) -> pl.DataFrame:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SchemaError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    try:
        return reader.without_trailing_blank_lines(pl.read_csv(data, infer_schema=False))
    except pl.exceptions.PolarsError as exc:
        raise SchemaError(f"{source}: not a readable CSV ({first_line(exc)})") from None


def read_links_text(source: str) -> pl.DataFrame:
    """Links as text cells from a path, an fsspec URL or '-' (stdin): CSV, JSON(L), Parquet."""
    if source == "-":
        data = sys.stdin.buffer.read()
        text = data.decode("utf-8", errors="replace").lstrip()
        if text.startswith(("{", "[")):
            return _text_of_json(text, "stdin")
        return _text_of_csv(data, "stdin")
    try:
        with fsspec.open(source, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise SchemaError(f"{source}: file not found") from None
    except (OSError, ImportError, ValueError) as exc:  # no s3fs for s3://, a denied read ...
        raise SchemaError(f"{source}: cannot read ({first_line(exc)})") from None
    if not data.strip():
        raise SchemaError(f"{source}: empty input")
    suffix = Path(source.split("?")[0]).suffix.lower()
    if suffix == ".parquet":
        try:
            return pl.read_parquet(io.BytesIO(data))  # parse_links turns typed cells into text
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise SchemaError(
                f"{source}: not a readable Parquet file ({first_line(exc)})"
            ) from None
    if suffix in (".json", ".jsonl", ".ndjson"):
        return _text_of_json(data.decode("utf-8", errors="replace"), source)
    return _text_of_csv(data, source)


OUT_OF_RANGE = "out_of_range"  # answers column: why a row lies outside what the model saw


def parse_links(
    text: pl.DataFrame, source: str = "input", strict: bool = False
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(valid typed rows, problems of the skipped rows) from text cells.

    Only input columns are checked; a missing input column is an error for the whole input.
    A legal input outside what the generator makes (a scan level far above the floor, a
    Fresnel clearance its environment never has) is answered, but with the reason in the
    rows' ``out_of_range`` column: the model never saw such a link, and its confident answer
    can be nonsense (319.9 Mbps where the physics gives 1.8). With ``strict`` those rows are
    skipped as bad inputs instead.
    """
    if any(dtype != pl.String for dtype in text.dtypes):  # a typed frame, e.g. from Parquet
        # only the columns it reads: any other (a datetime, a struct) is ignored, not encoded
        text = records_to_text(
            text.select(c for c in text.columns if c in schema.COLUMNS).to_dicts()
        )
    require_input_columns(text.columns, source)
    if text.height == 0:
        raise SchemaError(f"{source}: no rows")
    filled = text.with_columns(
        [
            pl.lit(_PLACEHOLDER.get(c, "0")).alias(c)
            for c in OPTIONAL_COLUMNS
            if c not in text.columns
        ]
    )
    if "scenario_id" not in text.columns:  # number the links 1..n
        filled = filled.with_columns(
            pl.int_range(1, pl.len() + 1).cast(pl.String).alias("scenario_id")
        )
    typed, parse_problems = reader.parse_text_frame(filled.select(schema.COLUMNS))
    problems = rules.check_frame(typed, parse_problems)
    keep = set(schema.INPUT_COLUMNS) | {"scenario_id"}
    problems = problems.filter(pl.col("column").is_in(list(keep)))
    if strict:
        problems = problems.with_columns(
            pl.when(pl.col("severity") == "warning")
            .then(pl.col("message") + " (refused: --strict)")
            .otherwise(pl.col("message"))
            .alias("message"),
            severity=pl.lit("error"),
        )
    errors = problems.filter(pl.col("severity") == "error")
    bad = errors["row"].unique()
    valid = typed.filter(~pl.col("_row").is_in(bad.implode()))
    reasons = (
        problems.filter(pl.col("severity") == "warning")
        .group_by("row", maintain_order=True)
        .agg((pl.col("column") + ": " + pl.col("message")).str.join("; ").alias(OUT_OF_RANGE))
        .rename({"row": "_row"})
    )
    valid = valid.join(reasons, on="_row", how="left", maintain_order="left")
    return valid, errors


# --- answering ----------------------------------------------------------------------------


def _softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    total = sum(weights)
    return [w / total for w in weights]


def guardrails(
    rows: pl.DataFrame, channel: np.ndarray, throughput: np.ndarray, target: str = "both"
) -> np.ndarray:
    """True where the answer is usable: an available channel and 0 < throughput <= 10 x bw
    (each checked only where the model's target answers it)."""
    ok = np.ones(rows.height, dtype=bool)
    if target != "throughput":
        available = rows["available_channels_mhz"].to_list()
        ok &= np.array([int(c) in set(a) for c, a in zip(channel, available, strict=True)])
    if target != "channel":
        ok &= throughput_in_range(rows, throughput)
    return ok


def throughput_in_range(rows: pl.DataFrame, throughput: np.ndarray) -> np.ndarray:
    bandwidth = rows["channel_bandwidth_mhz"].to_numpy()
    with np.errstate(invalid="ignore"):
        return np.nan_to_num((throughput > 0) & (throughput <= 10 * bandwidth), nan=False).astype(
            bool
        )


@dataclass
class Prediction:
    """Per-row answers of the valid rows and the problems of the skipped ones."""

    rows: pl.DataFrame
    problems: pl.DataFrame

    @property
    def failed(self) -> bool:
        """True when a row was skipped or a row has no usable answer (no fallback)."""
        return self.problems.height > 0 or bool((self.rows["source"] == "none").any())

    def out_of_range(self) -> pl.DataFrame:
        """scenario_id and reason of each answered row outside what the model saw."""
        return self.rows.filter(pl.col(OUT_OF_RANGE).is_not_null()).select(
            "scenario_id", OUT_OF_RANGE
        )

    def skipped_ids(self) -> list:
        return self.problems["scenario_id"].unique(maintain_order=True).to_list()

    @property
    def skipped_rows(self) -> int:
        """Rows skipped for bad inputs (ids may repeat or be missing: counted by row)."""
        return self.problems["row"].n_unique()

    def summary(self, output: str) -> dict:
        """The counts a person reads after a batch: answered (by the model, by the
        fallback, unusable) and skipped, with the first skipped ids."""
        rows = self.rows
        return {
            "output": output,
            "answered": rows.height,
            "from_model": int((rows["source"] == "model").sum()),
            "from_fallback": int(rows["source"].is_in(["heuristic", "ranked"]).sum()),
            "unusable": int((rows["source"] == "none").sum()),
            "skipped": self.skipped_rows,
            # answered, but outside what the model saw: the answers' out_of_range says why
            "out_of_range": int(rows[OUT_OF_RANGE].is_not_null().sum()),
            "skipped_ids": self.skipped_ids()[:1000],
            "failed": self.failed,
        }


class Predictor:
    """A loaded model that answers links; load once, call ``predict`` many times."""

    def __init__(
        self,
        model: str = CHAMPION,
        batch_size: int = 64,
        fallback: Fallback = "none",
        token: str | None = None,
        registry_path: str | Path | None = None,
        top_k: int = TOP_K,
        strict: bool = False,
        device: str = "auto",
    ):
        check_top_k(top_k)  # before the model loads
        self.strict = strict
        self.model_name = model
        self.loaded = models.load(
            model_folder(model, registry_path), token=token, device=devices.choose(device)
        )
        self.batch_size = batch_size
        self.fallback = fallback
        self.top_k = top_k

    @classmethod
    def from_config(cls, config: PredictConfig, token: str | None = None) -> Predictor:
        """The predictor a predict config describes (the flow's task and the stdin path)."""
        return cls(
            config.model,
            config.batch_size,
            config.fallback,
            token,
            config.registry,
            config.top_k,
            config.strict,
            config.device,
        )

    @property
    def source(self) -> str:
        return self.loaded.source

    def answer(self, rows: pl.DataFrame) -> pl.DataFrame:
        """Answers for typed, valid rows (one output row per input row, same order), a block
        of ``BLOCK_ROWS`` at a time with a progress line each: a large batch says how far it
        is, and the model's working memory is one block's, whatever the input's size (the
        answers themselves are kept for the one output file: about 1 KB a row)."""
        if rows.height <= BLOCK_ROWS:
            return self._answer_block(rows)
        done, started, blocks = 0, time.perf_counter(), []
        for block in rows.iter_slices(BLOCK_ROWS):
            blocks.append(self._answer_block(block))
            done += block.height
            rate = done / max(time.perf_counter() - started, 1e-9)
            log.info(
                "answered %d of %d rows (%.0f rows/s, about %.0f s left)",
                done,
                rows.height,
                rate,
                (rows.height - done) / rate,
            )
        return pl.concat(blocks)

    def _answer_block(self, rows: pl.DataFrame) -> pl.DataFrame:
        m, tok, fmt = self.loaded.model, self.loaded.tokenizer, self.loaded.prompt_format
        greedy = answers.generate(m, tok, fmt, rows, self.batch_size)
        ranked = (
            answers.rank_channels(m, tok, fmt, rows, self.batch_size)
            if fmt.target != "throughput"
            else [[] for _ in range(rows.height)]
        )
        channel, throughput = greedy.channel, greedy.throughput
        valid = greedy.valid & guardrails(rows, channel, throughput, fmt.target)
        source = np.where(valid, "model", "none")
        answers_channel = fmt.target != "throughput"
        if self.fallback != "none" and answers_channel:  # no fallback invents a throughput
            # heuristic: the quietest channel replaces an unusable answer; ranked: the
            # model's own most likely available channel. A throughput that passed its own
            # guardrail is kept, anything else is left empty rather than invented.
            replacement = (
                baselines.quietest_channel(rows)
                if self.fallback == "heuristic" or not ranked[0]
                else np.array([r[0][0] for r in ranked])
            )
            throughput_ok = throughput_in_range(rows, throughput)
            channel = np.where(valid, channel, replacement)
            throughput = np.where(valid | throughput_ok, throughput, np.nan)
            source = np.where(valid, "model", self.fallback)
        unanswered = source == "none"
        no_channel = unanswered | (not answers_channel)  # a throughput model answers none
        out = {
            "scenario_id": rows["scenario_id"],
            "recommended_channel_mhz": pl.Series(np.where(no_channel, -1, channel)).set(
                pl.Series(no_channel), None
            ),
            "expected_throughput_mbps": pl.Series(
                np.where(unanswered, np.nan, np.round(throughput, 3)), nan_to_null=True
            ),
        }
        shares = [_softmax([s for _, s in r]) if r else [] for r in ranked]
        for k in range(self.top_k):  # a row with fewer channels than k: empty cells
            out[f"candidate_{k + 1}_mhz"] = pl.Series(
                [r[k][0] if len(r) > k else None for r in ranked], dtype=pl.Int64
            )
            out[f"candidate_{k + 1}_score"] = pl.Series(
                [round(p[k], 4) if len(p) > k else None for p in shares], dtype=pl.Float64
            )
        out["valid"] = valid
        out["source"] = source.tolist()
        out["raw"] = [r.replace("<pad>", "").strip() for r in greedy.raw]
        # last, so a reader of the earlier columns by position is unaffected
        out[OUT_OF_RANGE] = (
            rows[OUT_OF_RANGE] if OUT_OF_RANGE in rows.columns else [None] * rows.height
        )
        return pl.DataFrame(out)

    def predict(self, text: pl.DataFrame, source: str = "input") -> Prediction:
        """Check the text rows, answer the valid ones, report the rest."""
        rows, problems = parse_links(text, source, self.strict)
        answered = self.answer(rows) if rows.height else empty_answers(self.top_k)
        return Prediction(answered, problems)

    def predict_source(self, source: str, split: str = "test") -> Prediction:
        """A file, fsspec URL or '-' (stdin), in CSV, JSON, JSON lines or Parquet; or a
        dataset folder of the data flow, whose ``split`` rows are scored (labels ignored)."""
        if Path(source).is_dir():
            from linklm.model import examples

            if not (Path(source) / "manifest.json").exists():
                raise SchemaError(f"{source}: a folder, but not a dataset (no manifest.json)")
            with dataset.reading(Path(source)):  # no writer changes the rows meanwhile
                rows = examples.split_rows(Path(source), split)
            return self.predict(rows, f"{source} ({split})")
        return self.predict(read_links_text(source), source)

    def predict_one(self, link: dict) -> dict:
        """One link as a dict of inputs -> its answer as a dict (or the problems)."""
        result = self.predict(records_to_text([link]), "link")
        if result.rows.height == 0:
            raise PredictError(
                "the link has bad inputs: "
                + "; ".join(f"{p['column']}: {p['message']}" for p in result.problems.to_dicts())
            )
        return result.rows.to_dicts()[0]


def empty_answers(top_k: int = TOP_K) -> pl.DataFrame:
    columns = {
        "scenario_id": pl.Int64,
        "recommended_channel_mhz": pl.Int64,
        "expected_throughput_mbps": pl.Float64,
    }
    for k in range(top_k):
        columns[f"candidate_{k + 1}_mhz"] = pl.Int64
        columns[f"candidate_{k + 1}_score"] = pl.Float64
    columns |= {"valid": pl.Boolean, "source": pl.String, "raw": pl.String}
    columns |= {OUT_OF_RANGE: pl.String}
    return pl.DataFrame(schema=columns)
