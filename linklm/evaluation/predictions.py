"""One system's per-row predictions on a split, in one shape for models and baselines.

Columns: scenario_id, the truth, the prediction (null where the system gave no usable
answer), the available channels ranked best first (null for systems that cannot rank), the
raw model output (null for baselines) and the slice columns. Written as Parquet and as CSV,
so any metric can be recomputed outside the platform.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from linklm import atomic
from linklm.evaluation.metrics import SLICE_COLUMNS

FILE_PARQUET = "predictions.parquet"
FILE_CSV = "predictions.csv"


def frame(
    rows: pl.DataFrame,
    channel: np.ndarray | None = None,
    throughput: np.ndarray | None = None,
    ranked: list[list[int]] | None = None,
    raw: list[str] | None = None,
) -> pl.DataFrame:
    """Predictions of one system; a channel < 0 or a NaN throughput means 'no answer'."""
    n = rows.height
    if channel is None and ranked is not None:
        channel = np.array([r[0] if r else -1 for r in ranked], dtype=np.int64)
    pred_channel = (
        pl.Series("pred_channel", channel, dtype=pl.Int64) if channel is not None else None
    )
    pred_tp = (
        pl.Series("pred_throughput", throughput, dtype=pl.Float64, nan_to_null=True)
        if throughput is not None
        else None
    )
    return pl.DataFrame(
        {
            "scenario_id": rows["scenario_id"],
            "true_channel": rows["recommended_channel_mhz"].cast(pl.Int64),
            "pred_channel": (
                pred_channel.set(pred_channel < 0, None)
                if pred_channel is not None
                else pl.Series([None] * n, dtype=pl.Int64)
            ),
            "true_throughput": rows["expected_throughput_mbps"].cast(pl.Float64),
            "pred_throughput": pred_tp
            if pred_tp is not None
            else pl.Series([None] * n, dtype=pl.Float64),
            "ranked_channels": pl.Series(ranked, dtype=pl.List(pl.Int64))
            if ranked is not None
            else pl.Series([None] * n, dtype=pl.List(pl.Int64)),
            "raw": pl.Series(raw, dtype=pl.String)
            if raw is not None
            else pl.Series([None] * n, dtype=pl.String),
        }
    ).hstack(rows.select(SLICE_COLUMNS))


def write(predictions: pl.DataFrame, out_dir: Path) -> dict[str, Path]:
    """Parquet (lists kept) and CSV (ranked channels space-separated), each atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"parquet": out_dir / FILE_PARQUET, "csv": out_dir / FILE_CSV}
    with atomic.atomic_path(paths["parquet"]) as tmp:
        predictions.write_parquet(tmp)
    flat = predictions.with_columns(
        pl.col("ranked_channels").cast(pl.List(pl.String)).list.join(" ")
    )
    with atomic.atomic_path(paths["csv"]) as tmp:
        flat.write_csv(tmp)
    return paths


def read(out_dir: Path) -> pl.DataFrame:
    return pl.read_parquet(Path(out_dir) / FILE_PARQUET)
