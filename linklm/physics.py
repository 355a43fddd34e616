"""The physics of DATA_SPEC.md: labels as a pure function of a link's inputs.

The generator labels rows with it and the validator and the oracle baseline re-derive labels
with it, so there is exactly one implementation. It works on a polars frame whose rows are
already well-formed (the validator checks shape before it calls this), vectorised over rows
and over the flattened (row, channel) pairs of the spectral scan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from linklm import schema


def fspl_db(distance_m: np.ndarray, freq_mhz: np.ndarray) -> np.ndarray:
    """Free-space path loss in dB; distances under 1 m count as 1 m."""
    d_km = np.maximum(distance_m, 1.0) / 1000.0
    return 32.45 + 20.0 * np.log10(d_km) + 20.0 * np.log10(freq_mhz)


def fresnel_loss_db(fresnel_clear_pct: np.ndarray) -> np.ndarray:
    p = np.asarray(fresnel_clear_pct, dtype=np.float64)
    return np.select([p >= 90, p >= 70, p >= 50, p >= 30], [0.0, 1.0, 3.0, 6.0], default=10.0)


def throughput_mbps(bandwidth_mhz: np.ndarray, snr_db: np.ndarray) -> np.ndarray:
    snr = np.clip(snr_db, -10.0, 60.0)
    return bandwidth_mhz * 10.0 / (1.0 + np.exp(-(snr - 25.0) / 4.0))


def excess_loss_db(df: pl.DataFrame) -> np.ndarray:
    """Weather, clutter, Fresnel and obstruction loss per row (everything but FSPL)."""
    env_density = pl.concat_str(["environment_type", "area_density"], separator="/")
    density_table = {f"{e}/{d}": v for (e, d), v in schema.DENSITY_LOSS_DB_PER_KM.items()}
    per_km = df.select(
        weather=pl.col("weather_condition").replace_strict(
            schema.WEATHER_LOSS_DB_PER_KM, return_dtype=pl.Float64
        ),
        density=env_density.replace_strict(density_table, return_dtype=pl.Float64),
        obstruction=pl.col("image_obstruction_type").replace_strict(
            schema.OBSTRUCTION_LOSS_DB, return_dtype=pl.Float64
        ),
    )
    d_km = df["link_distance_m"].to_numpy() / 1000.0
    return (
        per_km["weather"].to_numpy() * d_km
        + per_km["density"].to_numpy() * d_km
        + fresnel_loss_db(df["fresnel_clear_pct"].to_numpy())
        + per_km["obstruction"].to_numpy()
    )


@dataclass(frozen=True)
class Labels:
    """Oracle labels and the per-channel scores behind them (unrounded)."""

    recommended_channel_mhz: np.ndarray
    expected_throughput_mbps: np.ndarray
    rssi_dbm: np.ndarray
    snr_db: np.ndarray
    best_score: np.ndarray
    labelled_score: np.ndarray | None = None


def flat_scan(df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(channels, scan levels, per-row counts) with the scan flattened over rows."""
    counts = df["available_channels_mhz"].list.len().to_numpy().astype(np.int64)
    channels = df["available_channels_mhz"].explode().to_numpy().astype(np.float64)
    scan = df["spectral_scan_dbm"].explode().to_numpy().astype(np.float64)
    return channels, scan, counts


def channel_scores(
    df: pl.DataFrame, flat: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(channels, scan, counts, snr, score) over the flattened (row, channel) pairs."""
    channels, scan, counts = flat or flat_scan(df)
    if np.any(counts == 0):
        raise ValueError("every row needs at least one available channel")
    row_of = np.repeat(np.arange(len(counts)), counts)
    distance = df["link_distance_m"].to_numpy()
    tx = df["tx_power_dbm"].to_numpy()
    floor = df["noise_floor_dbm"].to_numpy()
    loss = excess_loss_db(df)
    # FSPL splits into a per-row distance term and a per-channel frequency term.
    per_row = tx + schema.ANTENNA_GAINS_DB - loss - fspl_db(distance, 1.0)
    rssi = per_row[row_of] - 20.0 * np.log10(channels)
    snr = rssi - scan
    score = snr - 0.25 * (scan - floor[row_of])
    return channels, scan, counts, snr, score


def oracle_labels(
    df: pl.DataFrame,
    labelled_channel: np.ndarray | None = None,
    flat: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> Labels:
    """Recommended channel (argmax score, lowest frequency on a tie) and its throughput.

    With ``labelled_channel`` it also returns that channel's score, so a validator can accept
    a label whose score ties the best within float noise.
    """
    channels, scan, counts, snr, score = channel_scores(df, flat)
    row_of = np.repeat(np.arange(len(counts)), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    best_score = np.maximum.reduceat(score, starts)
    position = np.arange(len(score))
    is_best = score == best_score[row_of]
    first_best = np.minimum.reduceat(np.where(is_best, position, len(score)), starts)

    labelled_score = None
    if labelled_channel is not None:
        match = channels == np.asarray(labelled_channel, dtype=np.float64)[row_of]
        labelled_score = np.full(len(counts), -np.inf)
        np.maximum.at(labelled_score, row_of[match], score[match])

    bandwidth = df["channel_bandwidth_mhz"].to_numpy().astype(np.float64)
    return Labels(
        recommended_channel_mhz=channels[first_best].astype(np.int64),
        expected_throughput_mbps=throughput_mbps(bandwidth, snr[first_best]),
        rssi_dbm=(snr + scan)[first_best],
        snr_db=snr[first_best],
        best_score=best_score,
        labelled_score=labelled_score,
    )


def haversine_m(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Great-circle distance between [lat, lon, ...] rows a and b, in metres."""
    lat1, lon1, lat2, lon2 = map(np.radians, (a[:, 0], a[:, 1], b[:, 0], b[:, 1]))
    h = (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    )
    return 2.0 * schema.EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
