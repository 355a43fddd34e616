"""Baselines and the ceiling, computed from inputs only (never rssi_dbm / snr_db).

The floor: a random available channel, the training split's most frequent channel, the
quietest channel of the scan, the mean and per-bandwidth-mean throughput of the training
split. A strong conventional reference: gradient-boosted trees from scikit-learn on tabular
features. The ceiling: the physics oracle of DATA_SPEC.md, 100 % and zero error by
construction. ``all_baselines`` returns each as a predictions frame scored by the same
metric code as the model, and every channel baseline ranks all available channels (top-k).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from linklm import schema
from linklm.data import physics
from linklm.evaluation import predictions

ORACLE = "physics oracle"


def rank_flat(channels: np.ndarray, score: np.ndarray, counts: np.ndarray) -> list[list[int]]:
    """Per row, its channels by descending score (lower frequency first on a tie)."""
    row_of = np.repeat(np.arange(len(counts)), counts)
    order = np.lexsort((channels, -score, row_of))
    ordered = channels[order].astype(np.int64)
    return [part.tolist() for part in np.split(ordered, np.cumsum(counts)[:-1])]


def random_ranking(rows: pl.DataFrame, seed: int = 0) -> list[list[int]]:
    channels, _, counts = physics.flat_scan(rows)
    return rank_flat(channels, np.random.default_rng(seed).random(len(channels)), counts)


def random_channel(rows: pl.DataFrame, seed: int = 0) -> np.ndarray:
    return np.array([r[0] for r in random_ranking(rows, seed)])


def most_frequent_ranking(train: pl.DataFrame, rows: pl.DataFrame) -> list[list[int]]:
    """Each row's available channels by how often the training split recommends them."""
    counts_of = dict(train["recommended_channel_mhz"].value_counts().iter_rows())
    channels, _, counts = physics.flat_scan(rows)
    frequency = np.array([counts_of.get(int(c), 0) for c in channels], dtype=np.float64)
    return rank_flat(channels, frequency, counts)


def most_frequent_channel(train: pl.DataFrame, rows: pl.DataFrame) -> np.ndarray:
    return np.array([r[0] for r in most_frequent_ranking(train, rows)])


def quietest_ranking(rows: pl.DataFrame) -> list[list[int]]:
    """Channels by ascending scan level: the heuristic a person would use first."""
    channels, scan, counts = physics.flat_scan(rows)
    return rank_flat(channels, -scan, counts)


def quietest_channel(rows: pl.DataFrame) -> np.ndarray:
    """The available channel with the lowest scan reading (lowest frequency on a tie)."""
    return np.array([r[0] for r in quietest_ranking(rows)])


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
    """(channel, throughput) by the physics, rounded as the labels are: the ceiling."""
    labels = physics.oracle_labels(rows)
    throughput = np.round(
        labels.expected_throughput_mbps, schema.DECIMALS["expected_throughput_mbps"]
    )
    return labels.recommended_channel_mhz, throughput


def oracle_ranking(rows: pl.DataFrame) -> list[list[int]]:
    channels, _, counts, _, score = physics.channel_scores(rows)
    return rank_flat(channels, score, counts)


# --- scikit-learn on tabular features -------------------------------------------------------

_CATEGORICAL = ("environment_type", "area_density", "weather_condition", "image_obstruction_type")
_NUMERIC = (
    "link_distance_m",
    "noise_dbm",
    "noise_floor_dbm",
    "tx_power_dbm",
    "channel_bandwidth_mhz",
    "channel_utilization_pct",
    "fresnel_clear_pct",
    "weather_temp_c",
    "weather_humidity_pct",
)


def row_features(rows: pl.DataFrame) -> np.ndarray:
    """Numeric inputs plus categorical inputs as codes of DATA_SPEC's fixed category sets."""
    columns = [rows[c].cast(pl.Float64).to_numpy() for c in _NUMERIC]
    columns.append(rows["image_obstruction_detected"].cast(pl.Float64).to_numpy())
    for name in _CATEGORICAL:
        codes = {v: i for i, v in enumerate(schema.CATEGORIES[name])}
        columns.append(rows[name].replace_strict(codes, return_dtype=pl.Float64).to_numpy())
    return np.column_stack(columns)


def candidate_features(rows: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One feature row per (row, available channel): the row's inputs and the candidate's
    frequency, scan level, and scan level relative to the row's quietest and mean reading."""
    channels, scan, counts = physics.flat_scan(rows)
    row_of = np.repeat(np.arange(len(counts)), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    quietest = np.minimum.reduceat(scan, starts)[row_of]
    mean = (np.add.reduceat(scan, starts) / counts)[row_of]
    features = np.column_stack(
        [row_features(rows)[row_of], channels, scan, scan - quietest, scan - mean, counts[row_of]]
    )
    return features, channels, counts


class TabularModel:
    """Gradient-boosted trees: a pointwise channel ranker and a throughput regressor.

    The ranker scores every available channel of a row (is it the recommended one?); the
    regressor sees the row's inputs plus the scan level and frequency of the channel the
    ranker picked, since throughput depends on the channel used.
    """

    def __init__(self, seed: int = 0, max_iter: int = 200):
        # imported here: 2-3 s that a process answering links (predict, serve) never needs
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        self.ranker = HistGradientBoostingClassifier(max_iter=max_iter, random_state=seed)
        self.regressor = HistGradientBoostingRegressor(max_iter=max_iter, random_state=seed)

    @staticmethod
    def _chosen(features: np.ndarray, counts: np.ndarray, position: np.ndarray) -> np.ndarray:
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        return features[starts + position]

    def fit(self, train: pl.DataFrame) -> TabularModel:
        features, channels, counts = candidate_features(train)
        row_of = np.repeat(np.arange(len(counts)), counts)
        label = train["recommended_channel_mhz"].to_numpy()[row_of]
        is_label = channels == label
        self.ranker.fit(features, is_label)
        position = np.flatnonzero(is_label) - np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.regressor.fit(
            self._chosen(features, counts, position), train["expected_throughput_mbps"].to_numpy()
        )
        return self

    def predict(self, rows: pl.DataFrame) -> tuple[list[list[int]], np.ndarray]:
        features, channels, counts = candidate_features(rows)
        score = self.ranker.predict_proba(features)[:, 1]
        ranked = rank_flat(channels, score, counts)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        row_of = np.repeat(np.arange(len(counts)), counts)
        best = np.maximum.reduceat(score, starts)
        position = np.minimum.reduceat(
            np.where(score == best[row_of], np.arange(len(score)), len(score)), starts
        )
        throughput = self.regressor.predict(features[position])
        return ranked, throughput


def all_baselines(
    train: pl.DataFrame, rows: pl.DataFrame, seed: int = 0, tabular_rows: int = 5000
) -> dict[str, pl.DataFrame]:
    """Every baseline's predictions on ``rows``, fitted on (at most ``tabular_rows`` of) train."""
    tabular_train = train.sample(min(tabular_rows, train.height), seed=seed, shuffle=False)
    tab_ranked, tab_throughput = TabularModel(seed).fit(tabular_train).predict(rows)
    oracle_channel, oracle_throughput = oracle(rows)
    return {
        "random channel": predictions.frame(rows, ranked=random_ranking(rows, seed)),
        "most frequent channel": predictions.frame(rows, ranked=most_frequent_ranking(train, rows)),
        "quietest channel (scan)": predictions.frame(rows, ranked=quietest_ranking(rows)),
        "mean throughput": predictions.frame(rows, throughput=mean_throughput(train, rows)),
        "per-bandwidth mean throughput": predictions.frame(
            rows, throughput=per_bandwidth_mean_throughput(train, rows)
        ),
        "gradient-boosted trees (scikit-learn)": predictions.frame(
            rows, ranked=tab_ranked, throughput=tab_throughput
        ),
        ORACLE: predictions.frame(
            rows, channel=oracle_channel, throughput=oracle_throughput, ranked=oracle_ranking(rows)
        ),
    }
