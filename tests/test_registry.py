"""The champion registry: the promotion rule, atomic locked writes, the frozen-set guard."""

import json
import math
import shutil
import threading
from pathlib import Path

import pytest

from linklm import store
from linklm.serving import registry
from linklm.serving.registry import RegistryError, decide

FROZEN = {"data_dir": "frozen", "dataset_sha256": "a" * 64, "rows": 100, "generation": {}}


@pytest.mark.parametrize(
    ("metric", "challenger", "champion", "promote"),
    [
        ("top1", 0.81, 0.80, True),  # higher is better for accuracies
        ("top1", 0.79, 0.80, False),
        ("top1", 0.80, 0.80, False),  # a tie keeps the champion
        ("top1_ranked", 0.5, 0.4, True),
        ("top3", 0.9, 0.95, False),
        ("throughput_mae", 9.0, 10.0, True),  # lower is better for an error
        ("throughput_mae", 11.0, 10.0, False),
        ("throughput_mae", 10.0, 10.0, False),
        ("top1", None, 0.5, False),  # a failed challenger never wins
        ("top1", math.nan, 0.5, False),
        ("throughput_mae", None, 10.0, False),
        ("top1", 0.9, None, False),  # a champion that cannot be scored is not thrown out
    ],
)
def test_promotion_rule(metric, challenger, champion, promote):
    decision = decide(metric, challenger, champion, has_champion=True)
    assert decision.promote is promote
    assert metric in decision.reason


def test_an_error_over_fewer_answered_rows_does_not_win():
    """Throughput MAE is over the rows a model answered: 1.0 over 1 % of the rows is not
    better than 5.0 over all of them."""
    kept = decide("throughput_mae", 1.0, 5.0, True, challenger_coverage=0.01, champion_coverage=1)
    assert not kept.promote and "over 1% of the rows" in kept.reason
    assert decide("throughput_mae", 4.0, 5.0, True, 1.0, 1.0).promote
    assert decide("throughput_mae", 4.0, 5.0, True, 1.0, 0.5).promote  # more rows, less error
    # top1 counts an unanswered row as wrong already: no coverage rule, except none at all
    assert decide("top1", 0.5, 0.4, True, 0.5, 1.0).promote
    assert not decide("top1", 0.5, None, False, challenger_coverage=0.0).promote


def test_a_champion_without_a_usable_answer_loses_but_an_unscored_one_stays():
    scored = decide("throughput_mae", 70.0, None, True, 1.0, 0.0, champion_scored=True)
    assert scored.promote and "champion gave no usable answer" in scored.reason
    unscored = decide("throughput_mae", 70.0, None, True, 1.0, None, champion_error="gone")
    assert not unscored.promote and unscored.blocked  # an error with the way out, not a quiet keep
    assert "(gone)" in unscored.reason and "--replace-unscorable-champion" in unscored.reason
    replaced = decide("throughput_mae", 70.0, None, True, 1.0, None, replace_unscorable=True)
    assert replaced.promote and "replaces it" in replaced.reason


def test_coverage_reads_the_share_the_metric_rests_on():
    metrics = {"answered": 0.9, "throughput_answered": 0.8}
    assert registry.coverage("throughput_mae", metrics) == 0.8
    assert registry.coverage("top1", metrics) == 0.9
    assert registry.coverage("top1_ranked", metrics) is None  # a ranking answers every row
    assert registry.coverage("top1", None) is None


def test_first_scored_challenger_becomes_champion_but_not_a_failed_one():
    assert decide("top1", 0.01, None, has_champion=False).promote
    assert decide("throughput_mae", 500.0, None, has_champion=False).promote
    assert not decide("top1", None, None, has_champion=False).promote
    assert "first champion" in decide("top1", 0.3, None, has_champion=False).reason


def _outcome(name: str, score: float | None, champion_score: float | None = None) -> dict:
    return {
        "id": name,
        "run_dir": f"/runs/{name}",
        "status": "scored" if score is not None else "failed",
        "metric": "top1",
        "challenger_score": score,
        "champion_score": champion_score,
        "metrics": {"top1": score},
        "lineage": {"data_sha256": "b" * 64},
        "artifacts": None,
    }


def test_record_decisions_keeps_history_and_only_promotes_better(tmp_path):
    path = tmp_path / "reg" / "registry.json"
    assert registry.champion(path) is None
    with pytest.raises(RegistryError, match="no champion yet"):
        registry.champion_run_dir(path)

    first = registry.record_decision(path, _outcome("c1", 0.5), None, FROZEN)
    assert first["decision"] == "promoted" and registry.champion(path)["id"] == "c1"
    worse = registry.record_decision(path, _outcome("c2", 0.4, 0.5), "c1", FROZEN)
    tie = registry.record_decision(path, _outcome("c3", 0.5, 0.5), "c1", FROZEN)
    failed = registry.record_decision(path, _outcome("c4", None, None), "c1", FROZEN)
    assert [e["decision"] for e in (worse, tie, failed)] == ["kept", "kept", "failed"]
    assert registry.champion(path)["id"] == "c1"
    better = registry.record_decision(path, _outcome("c5", 0.6, 0.5), "c1", FROZEN)
    assert better["decision"] == "promoted" and better["champion"] == "c1"

    saved = json.loads(path.read_text())
    assert saved["champion"]["id"] == "c5" and saved["champion"]["score"] == 0.6
    assert saved["champion"]["lineage"]["data_sha256"] == "b" * 64
    assert [e["id"] for e in saved["history"]] == ["c1", "c2", "c3", "c4", "c5"]
    assert saved["frozen_test"]["dataset_sha256"] == FROZEN["dataset_sha256"]
    assert not list(path.parent.glob("*.tmp-*"))  # atomic writes leave no temp files


def test_champion_run_dir_points_at_the_run_and_says_when_it_is_gone(tmp_path):
    path = tmp_path / "registry.json"
    run = tmp_path / "runs" / "c1"
    (run / "model").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    registry.record_decision(path, _outcome("c1", 0.5) | {"run_dir": str(run)}, None, FROZEN)
    assert registry.champion_run_dir(path) == run
    (run / "run.json").unlink()  # not a finished run: not a name to look up on the Hub
    with pytest.raises(RegistryError, match=r"c1's folder .*c1 is not a finished run"):
        registry.champion_run_dir(path)
    (run / "model").rmdir()
    run.rmdir()
    with pytest.raises(RegistryError, match="not on this machine, and no copy was published"):
        registry.champion_run_dir(path)


def test_a_champion_trained_elsewhere_is_fetched_from_the_store(tmp_path, monkeypatch):
    """The registry names a run folder of the machine that trained it; any other machine
    takes the store's copy, downloaded once into its cache and checked file by file."""
    monkeypatch.setenv("LINKLM_HOME", str(tmp_path / "home"))
    run = tmp_path / "gpu-worker" / "c1"
    (run / "model").mkdir(parents=True)
    (run / "model" / "weights.bin").write_bytes(b"w" * 100)
    (run / "run.json").write_text("{}")
    copy = store.run_url((tmp_path / "store").as_uri(), "c1")
    store.publish_folder(run, copy)
    path = store.registry_url((tmp_path / "store").as_uri())
    registry.record_decision(
        path, _outcome("c1", 0.5) | {"run_dir": str(run), "artifacts": copy}, None, FROZEN
    )
    shutil.rmtree(run.parent)  # this is another machine: the trainer's disk is not here
    fetched = registry.champion_run_dir(path)
    assert fetched.parent == tmp_path / "home" / "store"
    assert (fetched / "model" / "weights.bin").read_bytes() == b"w" * 100
    assert registry.champion_run_dir(path) == fetched  # a cache hit, not a second download
    (tmp_path / "store" / "runs" / "c1" / "model" / "weights.bin").write_bytes(b"x" * 100)
    shutil.rmtree(fetched)
    with pytest.raises(RegistryError, match="weights.bin: its SHA256 is not the one"):
        registry.champion_run_dir(path)
    assert not fetched.exists()  # nothing half-downloaded where the cache looks
    registry.record_decision(
        path, _outcome("c2", None) | {"artifacts": "gs://bucket/c2"}, "c1", FROZEN
    )
    record = registry.read(path)["champion"] | {"artifacts": "gs://bucket/c1"}
    with pytest.raises(RegistryError, match="its copy gs://bucket/c1 cannot be read"):
        registry.champion_run_dir(path, {"champion": record})


def test_a_stale_comparison_or_another_frozen_set_is_refused(tmp_path):
    path = tmp_path / "registry.json"
    registry.record_decision(path, _outcome("c1", 0.5), None, FROZEN)
    # compared against "nobody" while c1 became champion: kept out, with the reason
    stale = registry.record_decision(path, _outcome("c2", 0.9), None, FROZEN)
    assert stale["decision"] == "kept" and "champion changed" in stale["reason"]
    other = FROZEN | {"dataset_sha256": "f" * 64}
    with pytest.raises(RegistryError, match="not comparable"):
        registry.record_decision(path, _outcome("c3", 0.9, 0.5), "c1", other)
    assert registry.champion(path)["id"] == "c1"


def test_concurrent_writers_never_lose_a_decision(tmp_path):
    path = tmp_path / "registry.json"
    registry.record_decision(path, _outcome("c0", 0.5), None, FROZEN)

    def write(i: int) -> None:
        registry.record_decision(path, _outcome(f"w{i}", 0.1, 0.5), "c0", FROZEN)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(registry.read(path)["history"]) == 9


def test_unreadable_registry_is_a_clear_error(tmp_path):
    path = tmp_path / "registry.json"
    path.write_text("{not json")
    with pytest.raises(RegistryError, match="not valid JSON"):
        registry.champion(path)
    for content, message in (
        ("[]", "not a registry"),
        ("null", "not a registry"),
        ('{"format": 1}', "lacks frozen_test, champion, history"),
        ('{"format": 1, "frozen_test": null, "champion": null, "history": {}}', "not a list"),
        ('{"format": 1, "frozen_test": null, "champion": "c1", "history": []}', "not an object"),
        ('{"format": 1, "frozen_test": null, "champion": {"id": "c1"}, "history": []}', "run_dir"),
        (
            '{"format": 1, "frozen_test": null, "champion": {"id": "c1", "run_dir": null}, '
            '"history": []}',
            "champion record is not an object with an id and a run_dir",
        ),
    ):
        path.write_text(content)
        with pytest.raises(RegistryError, match=message):
            registry.champion_run_dir(path)
    with pytest.raises(RegistryError, match="cannot read the registry"):
        registry.champion(tmp_path)  # a folder
    assert Path("runs/registry/registry.json") == registry.DEFAULT_PATH


def test_registry_and_storage_need_no_prefect():
    import subprocess
    import sys

    code = "import sys, linklm.serving.registry, linklm.store; print('prefect' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
