"""Metrics against hand-computed values and scikit-learn; baselines; the oracle's 100 %."""

import math

import numpy as np
import polars as pl
import pytest
from sklearn import metrics as skm

from linklm.evaluation import baselines, eval_report, evaluate, metrics, predictions, summaries
from linklm.model import answers as model_answers
from linklm.model import examples, numtok
from linklm.model.formats import PromptFormat
from linklm.model.runs import HISTORY_FILE


def _rows(truth_channels, truth_tp, available, **slices) -> pl.DataFrame:
    n = len(truth_channels)
    data = {
        "scenario_id": list(range(n)),
        "recommended_channel_mhz": truth_channels,
        "expected_throughput_mbps": truth_tp,
        "available_channels_mhz": available,
        "environment_type": slices.get("environment_type", ["Urban"] * n),
        "area_density": ["High"] * n,
        "weather_condition": ["Clear"] * n,
        "image_obstruction_detected": [False] * n,
        "channel_bandwidth_mhz": slices.get("channel_bandwidth_mhz", [20] * n),
    }
    return pl.DataFrame(data)


@pytest.fixture
def four_rows() -> pl.DataFrame:
    return _rows(
        [5180, 5200, 5745, 4900],
        [100.0, 50.0, 0.5, 200.0],
        [[5180, 5200, 5745]] * 3 + [[4900, 5180]],
        environment_type=["Urban", "Urban", "Rural", "Rural"],
        channel_bandwidth_mhz=[20, 40, 40, 80],
    )


def test_channel_metrics_by_hand(four_rows):
    # greedy: right, wrong by 20 MHz, no answer, right; ranking: 1st, 2nd, 3rd, 1st
    frame = predictions.frame(
        four_rows,
        channel=np.array([5180, 5180, -1, 4900]),
        ranked=[[5180, 5200, 5745], [5180, 5200, 5745], [5200, 5180, 5745], [4900, 5180]],
    )
    m = metrics.channel_metrics(frame)
    assert m["n"] == 4 and m["answered"] == 0.75
    assert m["top1"] == 0.5  # the unanswered row counts as wrong
    assert m["top1_ranked"] == 0.5
    assert m["top3"] == 1.0 and m["top5"] == 1.0
    assert m["abs_error_mhz"] == pytest.approx(20 / 3)  # over the answered rows only


def test_topk_counts_only_the_first_k():
    rows = _rows([5745], [1.0], [[5180, 5200, 5220, 5745]])
    frame = predictions.frame(rows, ranked=[[5180, 5200, 5220, 5745]])
    m = metrics.channel_metrics(frame)
    assert (m["top1"], m["top3"], m["top5"]) == (0.0, 0.0, 1.0)


def test_throughput_metrics_match_scikit_learn(four_rows):
    guess = np.array([110.0, np.nan, 0.0, 150.0])
    frame = predictions.frame(four_rows, throughput=guess)
    m = metrics.throughput_metrics(frame)
    truth, pred = np.array([100.0, 0.5, 200.0]), np.array([110.0, 0.0, 150.0])
    assert m["n_answered"] == 3
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(truth, pred))
    assert m["mae"] == pytest.approx((10 + 0.5 + 50) / 3)
    assert m["rmse"] == pytest.approx(math.sqrt((100 + 0.25 + 2500) / 3))
    assert m["r2"] == pytest.approx(skm.r2_score(truth, pred))
    # MAPE leaves out truths under 1 Mbps (a dead link would divide by ~0)
    assert m["mape"] == pytest.approx(100 * (10 / 100 + 50 / 200) / 2)


def test_a_system_without_an_answer_has_no_metrics(four_rows):
    frame = predictions.frame(four_rows, throughput=np.full(4, np.nan))
    scored = metrics.score(frame)
    assert scored["channel"] is None
    assert scored["throughput"] is None


def test_a_model_that_never_answers_scores_zero_not_nothing(four_rows):
    """Asked for both parts and answering none (greedy only, no ranking): top-1 0 %."""
    frame = predictions.frame(
        four_rows, channel=np.full(4, -1), throughput=np.full(4, np.nan), raw=["?"] * 4
    )
    scored = metrics.score(frame, metrics.answered_parts("both"))
    assert scored["channel"]["top1"] == 0.0 and scored["channel"]["answered"] == 0.0
    assert scored["throughput"]["answered"] == 0.0 and scored["throughput"]["mae"] is None
    # a slice where it answered nothing is 0 % too, not a blank
    answered_urban = predictions.frame(
        four_rows, channel=np.array([5180, 5200, -1, -1]), throughput=np.array([1.0, 2, 3, 4])
    )
    env = {
        s["value"]: s
        for s in metrics.slice_metrics(answered_urban, answers=metrics.answered_parts("both"))
        if s["column"] == "environment_type"
    }
    assert env["Rural"]["top1"] == 0.0 and env["Rural"]["answered"] == 0.0
    assert env["Urban"]["top1"] == 1.0 and env["Urban"]["answered"] == 1.0
    channel_only = metrics.score(frame, metrics.answered_parts("channel"))
    assert channel_only["throughput"] is None and channel_only["channel"]["top1"] == 0.0


def test_confusion_by_sub_band_matches_scikit_learn(four_rows):
    frame = predictions.frame(four_rows, channel=np.array([5180, 5300, -1, 4990]))
    confusion = metrics.confusion_by_sub_band(frame)
    labels = confusion["labels"]
    assert labels[-1] == "invalid" and "5100-5195" in labels and "5700-5795" in labels
    matrix = np.array(confusion["matrix"])
    assert matrix.sum() == 4
    assert matrix[labels.index("5100-5195"), labels.index("5100-5195")] == 1
    assert matrix[labels.index("5200-5295"), labels.index("5300-5395")] == 1
    assert matrix[labels.index("5700-5795"), labels.index("invalid")] == 1
    assert matrix[labels.index("4900-4995"), labels.index("4900-4995")] == 1
    expected = skm.confusion_matrix(
        ["5100-5195", "5200-5295", "5700-5795", "4900-4995"],
        ["5100-5195", "5300-5395", "invalid", "4900-4995"],
        labels=labels,
    )
    assert (matrix == expected).all()


def test_per_channel_report_matches_scikit_learn():
    truth = [5180] * 5 + [5200] * 3 + [5745]
    pred = [5180, 5180, 5180, 5200, -1, 5200, 5200, 5180, 5745]
    rows = _rows(truth, [1.0] * 9, [[5180, 5200, 5745]] * 9)
    report = metrics.per_channel_report(predictions.frame(rows, channel=np.array(pred)), top_n=2)
    assert [r["channel_mhz"] for r in report] == [5180, 5200]  # most frequent first
    p, r, f, s = skm.precision_recall_fscore_support(
        truth, pred, labels=[5180, 5200], zero_division=0
    )
    assert [x["precision"] for x in report] == pytest.approx(p.tolist())
    assert [x["recall"] for x in report] == pytest.approx(r.tolist())
    assert [x["f1"] for x in report] == pytest.approx(f.tolist())
    assert report[0]["precision"] == pytest.approx(3 / 4) and report[0]["recall"] == 3 / 5


def test_slices_cover_every_value(four_rows):
    frame = predictions.frame(
        four_rows,
        channel=np.array([5180, 5200, 5745, 5180]),
        throughput=np.array([100.0, 40.0, 0.5, 100.0]),
    )
    slices = metrics.slice_metrics(frame)
    env = {s["value"]: s for s in slices if s["column"] == "environment_type"}
    assert env["Urban"]["n"] == 2 and env["Urban"]["top1"] == 1.0
    assert env["Rural"]["top1"] == 0.5 and env["Rural"]["throughput_mae"] == pytest.approx(50.0)
    by_bw = metrics.throughput_by_bandwidth(frame)
    assert [b["bandwidth_mhz"] for b in by_bw] == [20, 40, 80]  # numeric order
    assert by_bw[1]["mae"] == pytest.approx(5.0)


def test_unparseable_answers_are_counted_not_raised():
    fmt = PromptFormat(kind="numtok-v1")
    raw = ["c5180 q010", "", "q010 c5180", "c5180", "<pad>c5185 q200<end_of_turn>", "c99999 qx"]
    parsed = model_answers.parse_all(raw, fmt)
    assert parsed.valid.tolist() == [True, False, False, False, True, False]
    assert parsed.channel.tolist()[:2] == [5180, -1]
    assert np.isnan(parsed.throughput[1])
    text = PromptFormat(kind="text")
    raw = [
        '{"recommended_channel_mhz": 5180, "expected_throughput_mbps": 12.5}',
        '{"recommended_channel_mhz": 5180, "expected_throughput_mbps": 12.5',  # cut off
        '{"recommended_channel_mhz": "5180", "expected_throughput_mbps": 1}',  # wrong type
        "I would pick 5180",
        '{"recommended_channel_mhz": NaN, "expected_throughput_mbps": 1}',
    ]
    parsed = model_answers.parse_all(raw, text)
    assert parsed.valid.tolist() == [True, False, False, False, False]
    assert parsed.throughput[0] == 12.5


def test_oracle_scores_100_percent_and_zero_error(small_dataset):
    test = examples.split_rows(small_dataset, "test")
    train = examples.split_rows(small_dataset, "train")
    systems = baselines.all_baselines(train, test, tabular_rows=500)
    oracle = metrics.score(systems[baselines.ORACLE])
    assert oracle["channel"]["top1"] == 1.0 and oracle["channel"]["abs_error_mhz"] == 0.0
    assert oracle["throughput"]["mae"] == 0.0 and oracle["throughput"]["rmse"] == 0.0
    quietest = metrics.score(systems["quietest channel (scan)"])["channel"]["top1"]
    random = metrics.score(systems["random channel"])["channel"]["top1"]
    assert 0.6 < quietest < 0.9  # DATA_SPEC's heuristic lands near 75 %
    assert random < 0.15
    assert (
        baselines.quietest_channel(test)
        == systems["quietest channel (scan)"]["pred_channel"].to_numpy()
    ).all()


def test_a_throughput_error_over_few_answered_rows_is_compared_on_those_rows(small_dataset):
    """A model exact on 4 rows and silent on the rest has not closed the whole gap."""
    test = examples.split_rows(small_dataset, "test")
    train = examples.split_rows(small_dataset, "train")
    frames = baselines.all_baselines(train, test, tabular_rows=300)
    truth = test["expected_throughput_mbps"].to_numpy()
    guess = np.full(test.height, np.nan)
    guess[:4] = truth[:4] + 1.0
    model = predictions.frame(test, channel=baselines.quietest_channel(test), throughput=guess)
    frames = {evaluate.MODEL: model} | frames
    systems = [evaluate.system_scores(evaluate.MODEL, "model", model)] + [
        evaluate.system_scores(name, "baseline", frame) for name, frame in frames.items()
    ][1:]
    tp = evaluate.standing(systems, frames)["throughput"]
    floor = frames["per-bandwidth mean throughput"]
    assert tp["answered"] == pytest.approx(4 / test.height)
    assert tp["model"] == pytest.approx(1.0)
    assert tp["baseline_value"] == pytest.approx(metrics.throughput_metrics(floor.head(4))["mae"])
    assert tp["baseline_value"] != pytest.approx(metrics.throughput_metrics(floor)["mae"])
    text = summaries.standing_text({"throughput": tp})
    assert f"over the {100 * 4 / test.height:.1f} % of links the model answered" in text
    table = summaries.systems_table(systems)
    assert f"| **{evaluate.MODEL}** | 100.0 % |" in table  # its channels: every row


def test_baselines_rank_every_available_channel(small_dataset):
    test = examples.split_rows(small_dataset, "test", max_rows=50)
    train = examples.split_rows(small_dataset, "train")
    for name, frame in baselines.all_baselines(train, test, tabular_rows=500).items():
        if frame["ranked_channels"].null_count():
            assert "throughput" in name
            continue
        assert [sorted(r) for r in frame["ranked_channels"].to_list()] == [
            sorted(r) for r in test["available_channels_mhz"].to_list()
        ], name


def test_tabular_baseline_uses_no_leaked_column(small_dataset):
    rows = examples.split_rows(small_dataset, "train", max_rows=20)
    features = baselines.row_features(rows)
    leaky = rows.with_columns(rssi_dbm=pl.lit(0.0), snr_db=pl.lit(0.0))
    assert (baselines.row_features(leaky) == features).all()
    assert features.shape == (20, 14)


def test_numtok_answers_round_trip_through_the_metrics(small_dataset):
    rows = examples.split_rows(small_dataset, "test", max_rows=30)
    raw = numtok.render_answers(rows, "both").to_list()
    parsed = model_answers.parse_all(raw, PromptFormat(kind="numtok-v1"))
    frame = predictions.frame(rows, channel=parsed.channel, throughput=parsed.throughput, raw=raw)
    scored = metrics.score(frame)
    assert scored["channel"]["top1"] == 1.0
    # numtok throughput is a 256-bin log code: small, non-zero error
    assert 0 < scored["throughput"]["mape"] < 5


def test_a_model_that_answers_no_throughput_is_said_so(small_dataset, tmp_path):
    """Asked for throughput and never answering it: a sentence and no chart, not silence;
    a run whose losses are all NaN (fp16 overflow) gets no training chart, not a failure."""
    test = examples.split_rows(small_dataset, "test", max_rows=40)
    train = examples.split_rows(small_dataset, "train")
    frames = baselines.all_baselines(train, test, tabular_rows=300)
    silent = np.full(test.height, np.nan)
    model = predictions.frame(test, channel=baselines.quietest_channel(test), throughput=silent)
    asked = metrics.answered_parts("both")
    systems = [evaluate.system_scores(evaluate.MODEL, "model", model, asked)] + [
        evaluate.system_scores(name, "baseline", frame) for name, frame in frames.items()
    ]
    tp = evaluate.standing(systems, {evaluate.MODEL: model} | frames)["throughput"]
    assert tp["model"] is None and tp["gap_closed"] is None and tp["answered"] == 0.0
    text = summaries.standing_text({"throughput": tp})
    assert "answered no throughput on any link" in text
    (tmp_path / HISTORY_FILE).write_text('[{"step": 10, "loss": NaN, "eval_loss": NaN}]')
    result = {
        "run_dir": str(tmp_path),
        "prompt_format": {"target": "both"},
        "systems": systems,
        "slices": [],
        "confusion_by_sub_band": metrics.confusion_by_sub_band(model),
    }
    drawn = eval_report.evaluation_charts(result, model)
    assert "throughput" not in drawn and "training" not in drawn
    assert {"baselines", "confusion"} <= set(drawn)


def test_a_model_below_the_heuristic_is_said_so_where_the_heuristic_is_the_oracle():
    standing = {
        "channel": {
            "model": 0.0,
            "baseline": "quietest channel (scan)",
            "baseline_value": 1.0,
            "oracle": 1.0,
            "gap_closed": None,  # heuristic = oracle on these rows: no gap
        }
    }
    assert "100.0 points **below** the heuristic" in summaries.standing_text(standing)
    level = standing["channel"] | {"model": 1.0}
    assert summaries.standing_text({"channel": level}).rstrip().endswith("100.0 %.")
