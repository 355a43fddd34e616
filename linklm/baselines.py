"""Baselines and the ceiling, computed from inputs only (never rssi_dbm / snr_db).

The floor: a random available channel, the most frequent channel of the training split,
the quietest channel of the scan, the mean and per-bandwidth-mean throughput of the
training split. The ceiling: the physics oracle of DATA_SPEC.md, which scores 100 % and
zero error by construction. Every function returns one prediction per row of ``rows``.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from linklm import physics


def random_channel(rows: pl.DataFrame, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([c[rng.integers(len(c))] for c in rows["available_channels_mhz"].to_list()])


def most_frequent_channel(train: pl.DataFrame, rows: pl.DataFrame) -> np.ndarray:
    """The training split's most frequent label, or the row's nearest available channel."""
    top = int(train["recommended_channel_mhz"].mode().sort()[0])
    return np.array(
        [
            min(c, key=lambda ch: (abs(ch - top), ch))
            for c in rows["available_channels_mhz"].to_list()
        ]
    )


def quietest_channel(rows: pl.DataFrame) -> np.ndarray:
    """The available channel with the lowest scan reading (lowest frequency on a tie)."""
    channels, scan, counts = physics.flat_scan(rows)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    row_of = np.repeat(np.arange(len(counts)), counts)
    lowest = np.minimum.reduceat(scan, starts)
    position = np.where(scan == lowest[row_of], np.arange(len(scan)), len(scan))
    return channels[np.minimum.reduceat(position, starts)].astype(np.int64)


def mean_throughput(train: pl.DataFrame, rows: pl.DataFrame) -> np.ndarray:
    return np.full(rows.height, float(train["expected_throughput_mbps"].mean()))


def per_bandwidth_mean_throughput(train: pl.DataFrame, rows: pl.DataFrame) -> np.ndarray:
    means = dict(
        train.group_by("channel_bandwidth_mhz")
        .agg(pl.col("expected_throughput_mbps").mean())
        .iter_rows()
    )
    overall = float(train["expected_throughput_mbps"].mean())
    return np.array([means.get(bw, overall) for bw in rows["channel_bandwidth_mhz"].to_list()])


def oracle(rows: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(channel, throughput) by the physics: the ceiling."""
    labels = physics.oracle_labels(rows)
    return labels.recommended_channel_mhz, labels.expected_throughput_mbps
