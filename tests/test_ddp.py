"""Training on two processes (DDP under torchrun, gloo on the CPU), against one process with
the same global batch: the same losses (within 1e-3; measured equal to 4 decimals), a run
that loads and answers, the world size and global batch in run.json, and a resume from a
checkpoint the two processes saved that ends with the uninterrupted run's weights."""

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from linklm.config import TrainConfig
from linklm.model import answers as model_answers
from linklm.model import examples, models, runs, training

COMMON = dict(
    max_steps=8,
    save_steps=4,
    eval_rows=0,
    max_rows=256,
    warmup_steps=0,
    logging_steps=1,
    group_by_length=False,  # the same batches on one process as on two
    learning_rate=3e-3,
)


def _losses(run: Path) -> list[float]:
    return [h["loss"] for h in json.loads((run / "history.json").read_text()) if "loss" in h]


@pytest.fixture(scope="module")
def two_runs(small_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    one = training.train(
        TrainConfig(data_dir=small_dataset, out_dir=out, run_name="one", batch_size=8, **COMMON)
    )
    two = training.train(
        TrainConfig(
            data_dir=small_dataset,
            out_dir=out,
            run_name="two",
            batch_size=4,
            nproc_per_node=2,
            master_port=29517,
            **COMMON,
        )
    )
    return out, one, two


def test_two_processes_learn_as_one_with_the_same_global_batch(two_runs, small_dataset):
    out, one, two = two_runs
    assert (one["world_size"], one["global_batch"]) == (1, 8)
    assert (two["world_size"], two["global_batch"]) == (2, 8)
    first, second = _losses(out / "one"), _losses(out / "two")
    assert len(first) == len(second) == 8
    assert second == pytest.approx(first, abs=1e-3)
    assert second[-1] < second[0] - 0.5  # it learns
    loaded = models.load(str(out / "two" / "model"))  # rank 0 saved a whole run
    rows = examples.split_rows(small_dataset, "test", max_rows=3)
    said = model_answers.generate(loaded.model, loaded.tokenizer, loaded.prompt_format, rows)
    assert len(said.raw) == 3 and all(said.raw)
    checkpoint = out / "two" / "checkpoints" / "checkpoint-8"
    assert sorted(p.name for p in checkpoint.glob("rng_state*")) == [
        "rng_state_0.pth",
        "rng_state_1.pth",
    ]


def test_a_two_process_run_resumes_to_the_same_weights(two_runs, small_dataset, tmp_path):
    """Stopped after its checkpoint at step 4 (the later files removed, as a kill would
    leave it), resumed on two processes: the weights of the uninterrupted run."""
    out, _, two = two_runs
    stopped = tmp_path / "two"
    shutil.copytree(out / "two", stopped)
    for name in ("model", "run.json", "history.json", "README.md"):
        path = stopped / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    shutil.rmtree(stopped / "checkpoints" / "checkpoint-8")
    assert runs.last_checkpoint(stopped).name == "checkpoint-4"  # per-rank RNG states accepted
    resumed = training.train(
        TrainConfig(out_dir=tmp_path, run_name="two", resume=True, master_port=29518)
    )
    assert resumed["steps"] == 8 and resumed["world_size"] == 2
    before = load_file(out / "two" / "model" / "model.safetensors")
    after = load_file(stopped / "model" / "model.safetensors")
    assert before.keys() == after.keys()
    assert all((before[k] == after[k]).all() for k in before)


def test_several_gpus_without_a_launcher_train_on_one_and_say_so(caplog):
    """Never DataParallel silently: with 4 GPUs visible to one process, one is used and the
    log says how to use all four. (The Trainer's own count, on a stand-in of its settings:
    this machine has no GPU.)"""
    from types import SimpleNamespace

    args = SimpleNamespace(n_gpu=4, _n_gpu=4)
    with caplog.at_level("WARNING", logger="linklm.model.training"):
        training.one_gpu_unless_distributed(args, distributed=False)
    assert args._n_gpu == 1
    assert "4 GPUs visible: training on cuda:0 only; --nproc-per-node 4" in caplog.text
    under_torchrun = SimpleNamespace(n_gpu=1, _n_gpu=1)
    assert training.one_gpu_unless_distributed(under_torchrun, distributed=True)._n_gpu == 1
