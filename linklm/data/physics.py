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


# Category -> code tables for excess_loss_db: casting a string column to an Enum and reading
# its physical codes is much cheaper than a string-keyed replace (and a string concat).
_WEATHER_ENUM = pl.Enum(list(schema.WEATHER_LOSS_DB_PER_KM))
_WEATHER_LOSS = np.array(list(schema.WEATHER_LOSS_DB_PER_KM.values()), dtype=np.float64)
_OBSTRUCTION_ENUM = pl.Enum(list(schema.OBSTRUCTION_LOSS_DB))
_OBSTRUCTION_LOSS = np.array(list(schema.OBSTRUCTION_LOSS_DB.values()), dtype=np.float64)
_ENVIRONMENTS = list(dict.fromkeys(e for e, _ in schema.DENSITY_LOSS_DB_PER_KM))
_DENSITIES = list(dict.fromkeys(d for _, d in schema.DENSITY_LOSS_DB_PER_KM))
_ENVIRONMENT_ENUM = pl.Enum(_ENVIRONMENTS)
_DENSITY_ENUM = pl.Enum(_DENSITIES)
_DENSITY_LOSS = np.full(len(_ENVIRONMENTS) * len(_DENSITIES), np.nan)
for (_e, _d), _v in schema.DENSITY_LOSS_DB_PER_KM.items():
    _DENSITY_LOSS[_ENVIRONMENTS.index(_e) * len(_DENSITIES) + _DENSITIES.index(_d)] = _v


def _codes(column: pl.Series, enum: pl.Enum) -> np.ndarray | None:
    """Category codes of a string column, or None where it has a null or an unknown value."""
    if column.null_count():
        return None
    try:
        return column.cast(enum).to_physical().to_numpy()
    except pl.exceptions.PolarsError:
        return None


def _per_km_by_code(df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    weather = _codes(df["weather_condition"], _WEATHER_ENUM)
    environment = _codes(df["environment_type"], _ENVIRONMENT_ENUM)
    density = _codes(df["area_density"], _DENSITY_ENUM)
    obstruction = _codes(df["image_obstruction_type"], _OBSTRUCTION_ENUM)
    if weather is None or environment is None or density is None or obstruction is None:
        return None
    density_index = environment.astype(np.intp) * len(_DENSITIES) + density
    return (
        _WEATHER_LOSS[weather],
        _DENSITY_LOSS[density_index],
        _OBSTRUCTION_LOSS[obstruction],
    )


def _per_km_by_replace(df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The string-keyed lookup: slower, but it raises polars' error on an unknown value."""
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
    return (
        per_km["weather"].to_numpy(),
        per_km["density"].to_numpy(),
        per_km["obstruction"].to_numpy(),
    )


def excess_loss_from(
    weather_db_per_km: np.ndarray,
    density_db_per_km: np.ndarray,
    obstruction_db: np.ndarray,
    distance_m: np.ndarray,
    fresnel_clear_pct: np.ndarray,
) -> np.ndarray:
    """Weather, clutter, Fresnel and obstruction loss per row, from the category tables'
    values per row (the generator indexes the tables itself, a frame reads its columns)."""
    d_km = distance_m / 1000.0
    return (
        weather_db_per_km * d_km
        + density_db_per_km * d_km
        + fresnel_loss_db(fresnel_clear_pct)
        + obstruction_db
    )


def excess_loss_db(df: pl.DataFrame) -> np.ndarray:
    """Weather, clutter, Fresnel and obstruction loss per row (everything but FSPL)."""
    weather, density, obstruction = _per_km_by_code(df) or _per_km_by_replace(df)
    return excess_loss_from(
        weather,
        density,
        obstruction,
        df["link_distance_m"].to_numpy(),
        df["fresnel_clear_pct"].to_numpy(),
    )


@dataclass(frozen=True)
class LinkInputs:
    """What the labels depend on besides the scan, one value per row."""

    distance_m: np.ndarray
    tx_power_dbm: np.ndarray
    noise_floor_dbm: np.ndarray
    bandwidth_mhz: np.ndarray
    excess_loss_db: np.ndarray

    @classmethod
    def of(cls, df: pl.DataFrame) -> LinkInputs:
        return cls(
            distance_m=df["link_distance_m"].to_numpy(),
            tx_power_dbm=df["tx_power_dbm"].to_numpy(),
            noise_floor_dbm=df["noise_floor_dbm"].to_numpy(),
            bandwidth_mhz=df["channel_bandwidth_mhz"].to_numpy(),
            excess_loss_db=excess_loss_db(df),
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

    def stored_columns(self) -> dict[str, np.ndarray]:
        """The four label columns as a dataset stores them, rounded per DATA_SPEC.md."""
        dec = schema.DECIMALS
        return {
            "recommended_channel_mhz": self.recommended_channel_mhz,
            "expected_throughput_mbps": np.round(
                self.expected_throughput_mbps, dec["expected_throughput_mbps"]
            ),
            "rssi_dbm": np.round(self.rssi_dbm, dec["rssi_dbm"]),
            "snr_db": np.round(self.snr_db, dec["snr_db"]),
        }


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
    snr, score = scores_from(LinkInputs.of(df), channels, scan, counts)
    return channels, scan, counts, snr, score


def scores_from(
    link: LinkInputs,
    channels: np.ndarray,
    scan: np.ndarray,
    counts: np.ndarray,
    frequency_db: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(snr, score) per flattened (row, channel) pair.

    ``frequency_db`` is ``20 log10(channel)`` per pair, for a caller that has it cheaper
    than a logarithm per pair (the generator looks it up by grid index: the same values,
    bit for bit, as the log below).
    """
    if np.any(counts == 0):
        raise ValueError("every row needs at least one available channel")
    # FSPL splits into a per-row distance term and a per-channel frequency term.
    per_row = (
        link.tx_power_dbm
        + schema.ANTENNA_GAINS_DB
        - link.excess_loss_db
        - fspl_db(link.distance_m, 1.0)
    )
    # The same operations, in the same order, as rssi = per_row - 20 log10(f),
    # snr = rssi - scan, score = snr - 0.25 * (scan - floor), with fewer temporaries.
    snr = np.repeat(per_row, counts)
    snr -= 20.0 * np.log10(channels) if frequency_db is None else frequency_db
    snr -= scan
    score = np.subtract(scan, np.repeat(link.noise_floor_dbm, counts))
    score *= 0.25
    np.subtract(snr, score, out=score)
    return snr, score


def _first_best_plain(score: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    row_of = np.repeat(np.arange(len(counts)), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    best_score = np.maximum.reduceat(score, starts)
    position = np.arange(len(score))
    is_best = score == best_score[row_of]
    return best_score, np.minimum.reduceat(np.where(is_best, position, len(score)), starts)


def _first_best(score: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(per-row max score, flat position of the first channel that reaches it)."""
    if len(counts) == 0:
        return _first_best_plain(score, counts)
    starts = np.zeros(len(counts), dtype=np.intp)
    np.cumsum(counts[:-1], out=starts[1:])
    best_score = np.maximum.reduceat(score, starts)
    # The flat positions where a row reaches its max, ascending: a row's first one is the
    # first at or after the row's start, unless that lies past the row's end.
    hits = np.flatnonzero(score == np.repeat(best_score, counts))
    at = np.searchsorted(hits, starts)
    if len(hits) and at[-1] < len(hits):
        first = hits[at]
        if not np.any(first >= starts + counts):
            return best_score, first
    # Some row never reaches its max (a NaN score): do what the plain version does.
    return _first_best_plain(score, counts)


def oracle_labels(
    df: pl.DataFrame,
    labelled_channel: np.ndarray | None = None,
    flat: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> Labels:
    """Recommended channel (argmax score, lowest frequency on a tie) and its throughput.

    With ``labelled_channel`` it also returns that channel's score, so a validator can accept
    a label whose score ties the best within float noise.
    """
    channels, scan, counts = flat or flat_scan(df)
    return labels_from(LinkInputs.of(df), channels, scan, counts, labelled_channel)


def labels_from(
    link: LinkInputs,
    channels: np.ndarray,
    scan: np.ndarray,
    counts: np.ndarray,
    labelled_channel: np.ndarray | None = None,
    frequency_db: np.ndarray | None = None,
) -> Labels:
    """``oracle_labels`` on arrays: the generator labels its draws before any frame exists."""
    snr, score = scores_from(link, channels, scan, counts, frequency_db)
    best_score, first_best = _first_best(score, counts)

    labelled_score = None
    if labelled_channel is not None:
        row_of = np.repeat(np.arange(len(counts)), counts)
        match = channels == np.asarray(labelled_channel, dtype=np.float64)[row_of]
        labelled_score = np.full(len(counts), -np.inf)
        np.maximum.at(labelled_score, row_of[match], score[match])

    snr_best = snr[first_best]
    return Labels(
        recommended_channel_mhz=channels[first_best].astype(np.int64),
        expected_throughput_mbps=throughput_mbps(link.bandwidth_mhz.astype(np.float64), snr_best),
        rssi_dbm=snr_best + scan[first_best],
        snr_db=snr_best,
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
