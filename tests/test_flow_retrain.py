"""The retrain flow under the Prefect test harness: promote the first, keep a tie, keep out a
failed challenger; the frozen test set, the lineage and the published copy."""

import json
from pathlib import Path

from conftest import artifact_keys

from flows.retrain import frozen_test, retrain_flow, where
from linklm import store
from linklm.config import RetrainConfig
from linklm.data import dataset
from linklm.serving import registry

TINY = {
    "frozen_rows": 1500,
    "n_rows": 1500,
    "train": {"max_steps": 4, "batch_size": 16},
    "eval_rows": 16,
}


def test_retrain_promotes_only_a_better_challenger(prefect_harness, tmp_path):
    shared = tmp_path / "shared"  # the store: the registry and the runs live there
    config = RetrainConfig(
        frozen_dir=tmp_path / "registry" / "frozen",
        out_dir=tmp_path / "retrain",
        data_seed=5,
        artifacts_url=shared.as_uri(),
        **TINY,
    )
    reg = where(config)
    assert reg == store.registry_url(shared.as_uri())
    first = retrain_flow(config)
    assert first["decision"] == "promoted" and "first champion" in first["reason"]
    run_dir = registry.champion_run_dir(reg)  # the store's copy, in this machine's cache
    assert run_dir.parent == store.home() / store.CACHE
    assert (run_dir / "run.json").exists() and (run_dir / "model").is_dir()
    assert (run_dir / "eval-frozen" / "metrics.json").exists()
    from linklm.serving import predict  # `--model champion` resolves to the promoted run's weights

    assert predict.model_folder("champion", reg) == str(run_dir / "model")

    lineage = first["lineage"]
    data_manifest = dataset.read_manifest(config.out_dir / "data" / "seed-5")
    frozen_manifest = dataset.read_manifest(config.frozen_dir)
    assert lineage["data_sha256"] == data_manifest["dataset_sha256"]
    assert lineage["frozen_test_sha256"] == frozen_manifest["dataset_sha256"]
    assert frozen_manifest["generation"]["seed"] == config.frozen_seed
    assert lineage["train_config"]["max_steps"] == 4 and lineage["code_version"]["linklm"]
    assert lineage["retrain_config"]["metric"] == "top1_ranked"

    # Same data, same seeds: the same model, the same score: a tie keeps the champion.
    second = retrain_flow(config)
    assert second["decision"] == "kept", second["reason"]
    assert second["champion"] == first["id"]
    assert second["champion_score"] == second["challenger_score"] == first["challenger_score"]
    assert (registry.champion_run_dir(reg) / "run.json").exists()

    # A frozen set from an earlier generator version is verified and kept, not rebuilt.
    generation_file = config.frozen_dir / dataset.GENERATION
    generation = json.loads(generation_file.read_text())
    del generation["generator"]  # as generator version 1 wrote it
    generation_file.write_text(json.dumps(generation))
    assert (
        frozen_test(config, registry.read(reg))["dataset_sha256"]
        == frozen_manifest["dataset_sha256"]
    )
    assert json.loads(generation_file.read_text()) == generation

    # A challenger that cannot train is recorded as failed, fails the run, and changes nothing.
    broken = config.model_copy(update={"model": str(tmp_path / "no-such-model")})
    state = retrain_flow(broken, return_state=True)
    assert state.is_failed() and "champion" in state.message
    saved = registry.read(reg)
    assert [e["decision"] for e in saved["history"]] == ["promoted", "kept", "failed"]
    assert saved["champion"]["id"] == first["id"] and saved["history"][-1]["error"]

    # A champion whose run folder is gone can never be compared: before, every retrain said
    # "kept" and exited 0 forever. Now the run fails naming it and the way out, which works.
    # Gone: the folder it trained in, its copy in the store, this machine's cached copy.
    gone = [Path(first["run_dir"]), shared / "runs" / first["id"], registry.champion_run_dir(reg)]
    for folder in gone:
        folder.rename(folder.with_name(folder.name + "-away"))
    state = retrain_flow(config, return_state=True)
    assert state.is_failed() and "could not be scored" in state.message
    assert "--replace-unscorable-champion" in state.message and first["id"] in state.message
    assert registry.read(reg)["history"][-1]["decision"] == "blocked"
    assert registry.champion(reg)["id"] == first["id"]
    replaced = retrain_flow(config.model_copy(update={"replace_unscorable_champion": True}))
    assert replaced["decision"] == "promoted" and "replaces it" in replaced["reason"]
    assert registry.champion(reg)["id"] == replaced["id"]
    for folder in gone:
        folder.with_name(folder.name + "-away").rename(folder)

    assert {"retrain-decision", "registry-history", "retrain-artifacts"} <= artifact_keys()
    copy = shared / "runs" / first["id"]
    assert store.read_index(copy.as_uri())["files"]
    assert (copy / "eval-frozen" / "report" / "report.html").exists()
    published = json.loads((shared / "registry" / "registry.json").read_text())
    assert published["champion"]["id"] == replaced["id"] and len(published["history"]) == 5
