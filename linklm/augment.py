"""Label-preserving augmentation: more distinct training rows from the same 30k.

The recommended channel is the argmax of a per-channel score over the available channels
(DATA_SPEC.md), and the throughput depends only on that channel. Removing channels that
did not win leaves the argmax, its tie-break (the lowest frequency among equal scores) and
the throughput exactly as they were, so a row with a random part of its losing channels
removed is a new, correctly labelled training example. No physics is evaluated: the
label is kept, never recomputed. The aim is new sets of close candidates to compare, since
with a fixed number of rows the training loss falls pass by pass while test accuracy
barely rises. Measured on the default model (6,000 steps, one seed each) it gained 1.9
points in one pairing and lost 2.5 in another, so ``TrainConfig`` leaves it off.
"""

from __future__ import annotations

import numpy as np
import polars as pl

_LISTS = ("available_channels_mhz", "spectral_scan_dbm")


def drop_losing_channels(
    rows: pl.DataFrame, copies: int, seed: int = 0, keep: float = 0.5
) -> pl.DataFrame:
    """``rows`` followed by ``copies`` variants of every row, each keeping every losing
    channel with probability ``keep`` (the recommended channel always stays).

    Deterministic in ``seed``. Variants keep the row's scenario_id: they come from the
    training split only and never cross into validation or test rows. A variant may have
    fewer than the spec's 10 channels; it is a training example, not a dataset row.
    """
    if copies <= 0:
        return rows
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep must lie in [0, 1], got {keep}")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x617567,)))
    variants = pl.concat([rows] * copies, how="vertical").with_row_index("_variant")
    flat = variants.select("_variant", "recommended_channel_mhz", *_LISTS).explode(list(_LISTS))
    kept = flat.filter(
        (pl.col("available_channels_mhz") == pl.col("recommended_channel_mhz"))
        | pl.Series(rng.random(flat.height) < keep)
    )
    lists = kept.group_by("_variant", maintain_order=True).agg(*_LISTS)
    out = variants.drop(*_LISTS).join(lists, on="_variant", how="left", maintain_order="left")
    return pl.concat([rows, out.select(rows.columns)], how="vertical_relaxed")
