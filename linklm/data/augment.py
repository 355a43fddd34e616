"""Label-preserving augmentation: more distinct training rows from the same 30k.

The recommended channel is the argmax of a per-channel score over the available channels
(DATA_SPEC.md), and the throughput depends only on that channel. Removing channels that
did not win leaves the argmax, its tie-break (the lowest frequency among equal scores) and
the throughput exactly as they were, so a row with a random part of its losing channels
removed is a new, correctly labelled training example (``drop_losing_channels``; no
physics is evaluated, the label is kept). A scan made louder by the same amount on every
channel also keeps the argmax; its throughput is re-derived (``shift_scan_levels``). The aim is new sets of close candidates to compare, since
with a fixed number of rows the training loss falls pass by pass while test accuracy
barely rises. Dropping channels, measured on the default model (6,000 steps, one seed
each), gained 1.9 points in one pairing and lost 2.5 in another, so ``TrainConfig`` leaves
it off.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from linklm.data import physics

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


def shift_scan_levels(
    rows: pl.DataFrame, copies: int, seed: int = 0, max_shift_db: float = 5.0
) -> pl.DataFrame:
    """``rows`` followed by ``copies`` variants of every row whose whole scan is louder by
    one random amount in (0, ``max_shift_db``] dB, on the scan's 0.1 dB grid.

    Every channel's score falls by the same 1.25 x shift (DATA_SPEC.md: score = rssi - scan
    - 0.25 (scan - floor)), so the recommended channel stays; its SNR falls by the shift, so
    the throughput, rssi and snr are re-derived with the physics oracle. The prompt shows
    levels above the noise floor, so a variant shows the same comparison between channels
    with other level tokens: it trains the comparison, not the memory of a row.
    """
    if copies <= 0:
        return rows
    most_tenths = int(max_shift_db * 10 + 1e-9)  # down to the grid: never above the maximum
    if most_tenths < 1:
        raise ValueError(f"max_shift_db must be at least 0.1 (the scan's grid), got {max_shift_db}")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x736866,)))
    variants = pl.concat([rows] * copies, how="vertical")
    tenths = rng.integers(1, most_tenths + 1, size=variants.height)
    variants = variants.with_columns(
        (
            (
                pl.col("spectral_scan_dbm").list.eval(pl.element() * 10) + pl.Series(tenths)
            ).list.eval((pl.element().round(0) / 10).round(1))  # polars multiplies by 0.1
        ).alias("spectral_scan_dbm")
    )
    labels = physics.oracle_labels(variants)
    same = labels.recommended_channel_mhz == variants["recommended_channel_mhz"].to_numpy()
    if not same.all():  # cannot happen unless a shift breaks a tie through float rounding
        variants = variants.filter(pl.Series(same))
        labels = physics.oracle_labels(variants)
    variants = variants.with_columns(pl.Series(k, v) for k, v in labels.stored_columns().items())
    return pl.concat([rows, variants.select(rows.columns)], how="vertical_relaxed")
