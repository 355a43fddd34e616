"""Training on the offline default model: every CPU mode learns, resume equals no interruption."""

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_train_config
from pydantic import ValidationError
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from linklm.config import GenerationConfig, PromptConfig, SplitConfig, TrainConfig
from linklm.data import dataset, shards
from linklm.errors import LinkLMError
from linklm.model import answers as model_answers
from linklm.model import examples, models, numtok, runs, training
from linklm.model.formats import PromptFormat

_config = tiny_train_config


def test_default_model_is_a_normal_checkpoint_with_number_tokens():
    folder = models.resolve(models.DEFAULT_MODEL)
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.config.model_type == "gemma3_text"
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 3e6
    for word in ("c5180", "l123", "r15", "t239", "f-995", "d82", "p82", "q201", "Urban"):
        ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] != tokenizer.unk_token_id, word
    saved = PromptFormat.load(folder)
    assert saved.kind == "numtok-v1" and saved.scan_channels == numtok.SCAN_CHANNELS
    assert saved.relative_levels  # levels above the quietest pair: see models.DefaultSpec
    assert len(tokenizer) == len(numtok.vocabulary())


def test_number_token_embeddings_start_ordered_by_value():
    """The first embedding dimension of each number family rises with the value; the rest of
    the vocabulary keeps its random init (no structure leaks into words or specials)."""
    folder = models.resolve(models.DEFAULT_MODEL)
    embedding = AutoModelForCausalLM.from_pretrained(folder).get_input_embeddings().weight
    tokenizer = AutoTokenizer.from_pretrained(folder)
    for family in (
        [f"l{i}" for i in range(256)],
        [f"r{i}" for i in range(256)],
        [f"c{c}" for c in range(4900, 6101, 5)],
        [f"f{i}" for i in range(-1150, -819)],
    ):
        first = embedding[tokenizer.convert_tokens_to_ids(family), 0]
        assert bool((first[1:] > first[:-1]).all()), family[0]
    words = embedding[tokenizer.convert_tokens_to_ids(["Urban", "Rain", "<bos>"]), :8]
    assert float(words.std()) < 0.03  # the random init (0.02); value features are 0.06


def test_prompt_plus_answer_is_the_chat_template_of_the_conversation(small_dataset):
    loaded = models.load(models.DEFAULT_MODEL)
    rows = examples.split_rows(small_dataset, "train", max_rows=5)
    data = examples.tokenize(rows, loaded.prompt_format, loaded.tokenizer)
    users = loaded.prompt_format.user_messages(rows)
    answers = loaded.prompt_format.answers(rows)
    for i in range(5):
        conversation = [
            {"role": "user", "content": users[i]},
            {"role": "assistant", "content": answers[i]},
        ]
        full = loaded.tokenizer.apply_chat_template(conversation, tokenize=False).rstrip()
        assert data[i]["input_ids"] == loaded.tokenizer(full, add_special_tokens=False)["input_ids"]
        assert loaded.tokenizer.unk_token_id not in data[i]["input_ids"]
        answer_ids = [t for t in data[i]["labels"] if t != -100]
        assert loaded.tokenizer.decode(answer_ids) == f"{answers[i]} <end_of_turn>"


class _AfterTrainingMemory(TrainerCallback):
    """Once training has ended, touches enough memory to lift the process's peak by 400 MB,
    as loading a float base for the merged export does; ``peak_at_end`` is the peak before."""

    peak_at_end: float = 0.0

    def on_train_end(self, args, state, control, **kwargs):
        self.peak_at_end = training.peak_memory_mb()["rss"]
        resident = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGESIZE")
        block = torch.ones(int(self.peak_at_end * 2**20 - resident + 400 * 2**20) // 4)
        del block


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_each_cpu_mode_trains_and_its_loss_falls(small_dataset, tmp_path, mode):
    config = _config(
        small_dataset, tmp_path, mode=mode, learning_rate=3e-3 if mode == "full" else 1e-2
    )
    after_training = _AfterTrainingMemory()
    summary = training.train(config, callbacks=[after_training])
    assert summary["final_train_loss"] < summary["first_train_loss"] - 0.5, summary
    run = tmp_path / "run"
    saved = json.loads((run / "run.json").read_text())
    assert (
        saved["dataset_sha256"]
        == json.loads((small_dataset / "manifest.json").read_text())["dataset_sha256"]
    )
    assert saved["config"]["mode"] == mode and saved["versions"]["transformers"]
    assert saved["peak_memory_mb"]["rss"] > 100  # a process with torch loaded is far above
    # the peak is training's: memory touched after it ends (the save, the merge) is not in it
    assert saved["peak_memory_mb"]["rss"] <= after_training.peak_at_end
    assert training.peak_memory_mb()["rss"] > after_training.peak_at_end + 300  # it did lift it
    assert (saved["peak_memory_mb"]["gpu"] is None) == (not torch.cuda.is_available())
    # what a --resume starts from, and the data it must continue on
    assert runs.saved_config(run) == saved["config"] | {
        runs.DATASET_KEY: saved["dataset_sha256"],
        examples.SPLIT_KEY: saved["split"],
    }
    assert saved["split"] == SplitConfig().model_dump() | {
        "train_ids_sha256": saved["split"]["train_ids_sha256"]
    }
    # a resume: the saved settings, with the ones given again on top
    given = TrainConfig(out_dir=tmp_path, run_name="run", learning_rate=0.5, resume=True)
    resumed = runs.resumed(given)
    assert resumed.mode == mode and resumed.learning_rate == 0.5 and resumed.resume
    assert resumed.data_dir == small_dataset and resumed.max_rows == config.max_rows
    if mode == "full":  # the same data split another way would train on other rows
        resplit = tmp_path / "resplit"
        shutil.copytree(small_dataset, resplit)
        shards.write_shards(resplit, SplitConfig(train=0.1, val=0.1), PromptConfig())
        with pytest.raises(LinkLMError, match=r"split the rows otherwise \(train 0.1, val 0.1"):
            runs.resumed(given.model_copy(update={"data_dir": resplit}))
    history = json.loads((run / "history.json").read_text())
    assert any("eval_loss" in h for h in history)
    # tokens/s is training's alone: the validation passes' seconds are counted apart
    tokens = max(h.get("num_input_tokens_seen", 0) for h in history)
    assert 0 < saved["eval_seconds"] < saved["train_seconds"]
    training_s = saved["train_seconds"] - saved["eval_seconds"]
    assert saved["tokens_per_second"] * training_s == pytest.approx(tokens, rel=0.1)
    reloaded = models.load(str(run / "model"))
    assert reloaded.prompt_format.kind == "numtok-v1"
    rows = examples.split_rows(small_dataset, "test", max_rows=4)
    answers = model_answers.generate(
        reloaded.model, reloaded.tokenizer, reloaded.prompt_format, rows, batch_size=3
    )
    assert len(answers.raw) == 4 and all(answers.raw)
    assert ((answers.channel > 0) == answers.valid).all()
    ranked = model_answers.rank_channels(
        reloaded.model, reloaded.tokenizer, reloaded.prompt_format, rows
    )
    assert [sorted(c for c, _ in r) for r in ranked] == [
        sorted(c) for c in rows["available_channels_mhz"].to_list()
    ]
    assert all(r[0][1] >= r[-1][1] for r in ranked)
    if mode == "lora":
        assert (run / "adapter" / "adapter_config.json").exists()


def test_lora_merged_weights_equal_the_adapter_model(small_dataset, tmp_path):
    from peft import AutoPeftModelForCausalLM

    config = _config(
        small_dataset, tmp_path, mode="lora", max_steps=6, eval_rows=0, learning_rate=1e-2
    )
    prepared = training.prepare(config)
    trainer, seconds, _ = training.fit(config, prepared)
    run = tmp_path / "run"
    training.save_run(config, prepared, trainer, seconds)
    first = {
        f: (run / f).read_bytes()
        for f in ("model/model.safetensors", "adapter/adapter_model.safetensors")
    }
    training.save_run(config, prepared, trainer, seconds)  # as the save task's retry would
    assert {f: (run / f).read_bytes() for f in first} == first
    recorded = json.loads((run / "run.json").read_text())[models.FILES_KEY]
    for sub in ("model", "adapter"):  # every file: weights, config, tokenizer, prompt format
        files = sorted(p.name for p in (run / sub).iterdir())
        assert sorted(recorded[sub]) == files and "linklm_prompt.json" in files
        assert all(
            recorded[sub][f] == hashlib.sha256((run / sub / f).read_bytes()).hexdigest()
            for f in files
        )
    assert (
        recorded["model"]["model.safetensors"]
        == hashlib.sha256(first["model/model.safetensors"]).hexdigest()
    )
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")
    adapter = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "run" / "adapter")
    ids = torch.tensor([[2, 4, 6, 10, 20, 30]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapter(ids).logits, atol=1e-4, rtol=1e-4)


class StopAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
            control.should_save = True
        return control


def test_resume_gives_the_same_result_as_no_interruption(small_dataset, tmp_path):
    straight = training.train(_config(small_dataset, tmp_path, run_name="straight"))
    stopped = training.train(
        _config(small_dataset, tmp_path, run_name="resumed"), callbacks=[StopAt(12)]
    )
    assert stopped == {"stopped_at_step": 12, "run_dir": str(tmp_path / "resumed")}
    half_saved = tmp_path / "resumed" / ".model.tmp-1-abcdef12"  # a kill during a save left it
    half_saved.mkdir()
    resumed = training.train(_config(small_dataset, tmp_path, run_name="resumed", resume=True))
    assert not half_saved.exists()
    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed["final_train_loss"] == straight["final_train_loss"]
    assert resumed["final_eval_loss"] == straight["final_eval_loss"]
    # killed while saving its result, after the last checkpoint: the resume trains no step
    # past the end (the Trainer alone would take step 25 and save checkpoint-25)
    done = tmp_path / "straight"
    for name in ("run.json", "history.json"):
        (done / name).unlink()
    shutil.rmtree(done / "model")
    saved = training.train(_config(small_dataset, tmp_path, run_name="straight", resume=True))
    assert saved["steps"] == 24 and saved["final_eval_loss"] == straight["final_eval_loss"]
    assert sorted(p.name for p in (done / "checkpoints").iterdir())[-1] == "checkpoint-24"
    again = load_file(done / "model" / "model.safetensors")
    for key in a:
        assert torch.equal(a[key], again[key]), key


def test_dry_run_touches_one_batch_and_writes_nothing(small_dataset, tmp_path):
    summary = training.train(_config(small_dataset, tmp_path, dry_run=True))
    assert summary["dry_run"] is True and 0 < summary["loss"] < 20
    assert not (tmp_path / "run").exists()  # no run folder, not even empty checkpoints


def test_augmented_copies_join_the_train_split_only(small_dataset, tmp_path):
    plain = training.prepare(_config(small_dataset, tmp_path, max_rows=300, augment_copies=0))
    more = training.prepare(_config(small_dataset, tmp_path, max_rows=300, augment_copies=2))
    assert len(plain.train_set) == 300 and len(more.train_set) == 900
    assert len(more.eval_set) == len(plain.eval_set) == 64
    first = more.train_set[0]["input_ids"]
    assert first == plain.train_set[0]["input_ids"]  # the original rows come first, unchanged
    shifted = training.prepare(_config(small_dataset, tmp_path, max_rows=300, shift_copies=1))
    assert len(shifted.train_set) == 600 and len(shifted.eval_set) == 64
    assert shifted.train_set[0]["input_ids"] == first
    assert shifted.train_set[300]["input_ids"] != first  # same row, louder scan tokens


def test_compiled_training_learns_and_saves_a_plain_checkpoint(small_dataset, tmp_path):
    summary = training.train(_config(small_dataset, tmp_path, torch_compile=True, eval_rows=0))
    assert summary["final_train_loss"] < summary["first_train_loss"] - 0.5, summary
    from safetensors import safe_open

    model_dir = tmp_path / "run" / "model"
    with safe_open(str(next(model_dir.glob("*.safetensors"))), "pt") as saved:
        keys = list(saved.keys())
    assert keys and not any("_orig_mod" in k for k in keys)  # the compile wrapper is not saved
    reloaded = models.load(str(model_dir))
    rows = examples.split_rows(small_dataset, "test", max_rows=2)
    answers = model_answers.generate(
        reloaded.model, reloaded.tokenizer, reloaded.prompt_format, rows
    )
    assert len(answers.raw) == 2 and all(answers.raw)


def test_qlora_without_cuda_stops_at_once_with_what_it_needs(small_dataset, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(runs.TrainingError, match="qlora needs a CUDA GPU.*use mode lora or full"):
        training.train(_config(small_dataset, tmp_path, mode="qlora"))


def test_only_the_unused_cpu_kernels_hub_warnings_are_dropped(caplog):
    # bitsandbytes asks the hub for a CPU 4-bit kernel as peft imports it (on AVX512-BF16
    # CPUs); offline that is two warnings per command about a kernel linklm never uses
    import linklm

    with caplog.at_level(logging.WARNING):
        for name in linklm.HUB_KERNEL_LOGGERS:
            logger = logging.getLogger(name)
            logger.warning("Failed to load %s: offline", linklm.UNUSED_HUB_KERNEL)
            logger.warning("something else went wrong")
    assert [r.getMessage() for r in caplog.records] == ["something else went wrong"] * 2


@pytest.mark.parametrize(
    ("flags", "native_bf16", "expected"),
    [
        ({}, True, torch.bfloat16),  # Ampere and later
        ({}, False, torch.float16),  # a T4: bfloat16 only emulated
        ({"bf16": True}, False, torch.bfloat16),  # the run's flag wins
        ({"fp16": True}, True, torch.float16),
    ],
)
def test_qlora_computes_in_the_runs_precision_else_the_gpus_best(
    small_dataset, tmp_path, flags, native_bf16, expected
):
    config = _config(small_dataset, tmp_path, mode="qlora", **flags)
    assert training.qlora_compute_dtype(config, native_bf16=native_bf16) == expected


def test_qlora_code_path_runs_on_cpu_with_the_cuda_check_lifted(
    small_dataset, tmp_path, monkeypatch
):
    """The QLoRA path end to end (4-bit base, adapters, checkpoint, resume, adapter and
    merged export, reload, generate) on the CPU, so it is exercised where no GPU is. Only the
    plumbing: bitsandbytes' CPU 4-bit gradients were measured wrong, which is why the real
    check refuses the CPU; the losses here are not looked at."""
    from peft import PeftModel

    pytest.importorskip("bitsandbytes", reason="the dev extra installs it")
    monkeypatch.setattr(training, "check_qlora_possible", lambda: None)
    config = _config(
        small_dataset, tmp_path, mode="qlora", max_steps=6, save_steps=3, learning_rate=1e-2
    )
    prepared = training.prepare(config)
    layers = {type(m).__name__ for _, m in prepared.model.named_modules()}
    assert "Linear4bit" in layers and "LoraModel" in layers, layers
    from bitsandbytes.nn import Linear4bit  # peft's LoRA wrapper has the same class name

    four_bit = [m for m in prepared.model.modules() if isinstance(m, Linear4bit)]
    assert {m.compute_dtype for m in four_bit} == {training.qlora_compute_dtype(config)}
    stopped = training.train(config, callbacks=[StopAt(3)])
    assert stopped["stopped_at_step"] == 3
    assert (
        tmp_path / "run" / "checkpoints" / "checkpoint-3" / "adapter_model.safetensors"
    ).exists()
    summary = training.train(config.model_copy(update={"resume": True}))
    run = tmp_path / "run"
    assert summary["steps"] == 6 and summary["model_dir"] == str(run / "model")
    assert runs.run_weights(run) == run / "model"
    assert runs.run_weights(run, adapter=True) == run / "adapter"
    # model/ is the adapter merged into the float32 base: a plain checkpoint, not 4-bit
    merged = AutoModelForCausalLM.from_pretrained(run / "model")
    assert not hasattr(merged.config, "quantization_config")
    float_base = models.load(summary["base_model"]).model
    ids = torch.tensor([[2, 4, 6, 10, 20, 30]])
    with torch.no_grad():
        base_logits = float_base(ids).logits
        adapted = PeftModel.from_pretrained(float_base, run / "adapter")(ids).logits
        merged_logits = merged(ids).logits
    torch.testing.assert_close(merged_logits, adapted, atol=1e-4, rtol=1e-4)
    assert (merged_logits - base_logits).abs().max() > 1e-3  # the adapter changed something
    for folder in ("model", "adapter"):
        reloaded = models.load(str(run / folder))
        assert reloaded.prompt_format.kind == "numtok-v1"
        rows = examples.split_rows(small_dataset, "test", max_rows=2)
        answers = model_answers.generate(
            reloaded.model, reloaded.tokenizer, reloaded.prompt_format, rows
        )
        assert len(answers.raw) == 2 and all(answers.raw)


def test_missing_or_partial_checkpoint_is_named(small_dataset, tmp_path):
    with pytest.raises(runs.TrainingError, match="no run started there, nothing to resume"):
        training.train(_config(small_dataset, tmp_path, resume=True))
    training.train(_config(small_dataset, tmp_path, eval_rows=0), callbacks=[StopAt(12)])
    # started again without resume: refused, not a second run mixed into the first's folder
    with pytest.raises(runs.TrainingError, match="an interrupted run is there.*resume continu"):
        training.train(_config(small_dataset, tmp_path, eval_rows=0, learning_rate=5e-3))
    checkpoint = tmp_path / "run" / "checkpoints" / "checkpoint-12"
    # the state a resume needs to continue exactly, each checked whole
    for name in runs.CHECKPOINT_STATE:
        state = (checkpoint / name).read_bytes()
        (checkpoint / name).write_bytes(state[: len(state) // 2])  # a save cut short
        with pytest.raises(runs.TrainingError, match=r"readable weights/state \(BadZipFile"):
            runs.last_checkpoint(tmp_path / "run")
        (checkpoint / name).unlink()  # the Trainer would skip the optimizer or the RNG state
        with pytest.raises(runs.TrainingError, match=f"missing {name}"):
            runs.last_checkpoint(tmp_path / "run")
        (checkpoint / name).write_bytes(state)
    assert runs.last_checkpoint(tmp_path / "run") == checkpoint
    # a checkpoint is a model folder that answers in the run's format
    assert models.load(str(checkpoint)).prompt_format.kind == "numtok-v1"
    (checkpoint / models.PROMPT_FILE).unlink()
    with pytest.raises(models.ModelError, match="missing, and this is a number-token model"):
        models.load(str(checkpoint))
    weights = checkpoint / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[:1000])
    with pytest.raises(
        runs.TrainingError, match=r"checkpoint-12: incomplete checkpoint .*delete it"
    ):
        training.train(_config(small_dataset, tmp_path, eval_rows=0, resume=True))
    assert weights.read_bytes() == good[:1000], "a failed resume must not touch the checkpoint"
    (checkpoint / "optimizer.pt").unlink()
    with pytest.raises(runs.TrainingError, match="missing optimizer.pt"):
        runs.last_checkpoint(tmp_path / "run")


def test_interrupted_save_is_dropped_and_resume_uses_the_one_before(small_dataset, tmp_path):
    training.train(_config(small_dataset, tmp_path, save_steps=4), callbacks=[StopAt(12)])
    checkpoints = tmp_path / "run" / "checkpoints"
    assert runs.last_checkpoint(tmp_path / "run") == checkpoints / "checkpoint-12"
    # a kill during the save of step 12: the Trainer had not written trainer_state.json yet
    (checkpoints / "checkpoint-12" / "trainer_state.json").unlink()
    (checkpoints / "checkpoint-12" / "optimizer.pt").write_bytes(b"half")
    assert runs.last_checkpoint(tmp_path / "run") == checkpoints / "checkpoint-8"
    assert not (checkpoints / "checkpoint-12").exists()
    # killed before any save: the resume starts from step 0
    for folder in checkpoints.iterdir():
        (folder / "trainer_state.json").unlink()
    assert runs.last_checkpoint(tmp_path / "run") is None


def test_finished_run_is_not_overwritten(small_dataset, tmp_path):
    training.train(_config(small_dataset, tmp_path, max_steps=2, eval_rows=0))
    before = (tmp_path / "run" / "run.json").read_text()
    weights = (tmp_path / "run" / "model" / "model.safetensors").read_bytes()
    with pytest.raises(runs.TrainingError, match="already there; choose another run_name"):
        training.train(_config(small_dataset, tmp_path, max_steps=2, eval_rows=0))
    with pytest.raises(runs.TrainingError, match="already there; nothing to resume"):
        training.train(_config(small_dataset, tmp_path, max_steps=4, eval_rows=0, resume=True))
    assert (tmp_path / "run" / "run.json").read_text() == before
    assert (tmp_path / "run" / "model" / "model.safetensors").read_bytes() == weights


def test_resume_keeps_what_the_checkpoint_is_and_names_a_damaged_config(small_dataset, tmp_path):
    config = _config(small_dataset, tmp_path, mode="lora", learning_rate=1e-2, eval_rows=0)
    training.train(config, callbacks=[StopAt(12)])
    saved = tmp_path / "run" / runs.CONFIG_FILE
    started = saved.read_bytes()
    again = TrainConfig(out_dir=tmp_path, run_name="run", resume=True)
    with pytest.raises(runs.TrainingError, match=r"keeps the settings.*mode 'lora' -> 'full'"):
        training.train(again.model_copy(update={"mode": "full"}))
    assert saved.read_bytes() == started, "a refused resume must not change the saved settings"
    saved.write_bytes(started[:100])
    with pytest.raises(runs.TrainingError, match=r"train_config.json: not readable JSON"):
        training.train(again)
    saved.write_text(json.dumps(json.loads(started) | {"old_option": 1}))
    with pytest.raises(runs.TrainingError, match=r"train_config.json: old_option: .*another ver"):
        training.train(again)
    saved.write_bytes(started)
    other = tmp_path / "other-data"
    dataset.build(other, GenerationConfig(n_rows=200, chunk_size=200, seed=2))
    with pytest.raises(runs.TrainingError, match=r"other-data: dataset .* is not the one run run"):
        training.train(again.model_copy(update={"data_dir": other}))
    saved.unlink()  # the checkpoints' settings unknown: refused, not the defaults
    with pytest.raises(runs.TrainingError, match=r"train_config.json is missing: the settings"):
        training.train(again)
    saved.write_bytes(started)
    # from Python as from the CLI: only run_name and resume given, the rest as started
    summary = training.train(again)
    assert summary["steps"] == 24 and summary["config"]["mode"] == "lora"
    assert summary["config"]["data_dir"] == str(small_dataset)
    # tokens/s counts this session's tokens only, not those of the 12 steps before the resume
    history = json.loads((tmp_path / "run" / runs.HISTORY_FILE).read_text())
    seen = {h["step"]: h["num_input_tokens_seen"] for h in history if "num_input_tokens_seen" in h}
    session = seen[24] - seen[12]
    assert seen[24] > 1.6 * session  # so counting all of them would be far off
    measured = summary["tokens_per_second"] * summary["train_seconds"]
    assert 0.8 * session < measured < 1.25 * session, (measured, session, seen)


def test_an_empty_validation_split_turns_validation_off(tmp_path):
    data = tmp_path / "data"
    dataset.build(data, GenerationConfig(n_rows=200, chunk_size=200, seed=2))
    shards.write_shards(
        data, SplitConfig(val=0), PromptConfig()
    )  # the data flow's --val-fraction 0
    summary = training.train(_config(data, tmp_path, max_steps=4, eval_steps=2, max_rows=None))
    assert summary["steps"] == 4 and summary["final_eval_loss"] is None


@pytest.mark.parametrize("name", ["", " ", ".", "..", "a/b", "..\\x"])
def test_a_run_name_is_one_folder_name(name):
    with pytest.raises(ValueError, match="not a folder name"):
        TrainConfig(run_name=name)


def test_bad_model_names_are_clear(small_dataset, tmp_path):
    with pytest.raises(LinkLMError, match="no such model folder"):
        models.resolve("./does/not/exist")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LinkLMError, match="not a model folder"):
        models.resolve(str(tmp_path / "empty"))


def test_answer_weights_reach_the_channel_and_throughput_tokens():
    tokenizer = models.load(models.DEFAULT_MODEL).tokenizer
    weights = training.token_weights(
        tokenizer, TrainConfig(channel_weight=2.0, throughput_weight=0.5)
    )
    vocab = tokenizer.get_vocab()
    assert (
        weights[vocab["c5180"]] == 2.0
        and weights[vocab["q10"]] == 0.5
        and weights[vocab["<end_of_turn>"]] == 1.0
    )
    assert training.token_weights(tokenizer, TrainConfig()) is None


def test_length_grouped_sampler_gets_a_plain_list_and_the_same_order(small_dataset, tmp_path):
    from transformers.trainer_pt_utils import get_length_grouped_indices

    config = _config(small_dataset, tmp_path, eval_rows=0, max_rows=300)
    prepared = training.prepare(config)
    trainer = training.build_trainer(config, prepared, tmp_path / "run")
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler.lengths, list)  # not datasets' lazy Column, read row by row
    assert sampler.lengths == list(prepared.train_set["length"])
    orders = []
    for lengths in (sampler.lengths, prepared.train_set["length"]):
        torch.manual_seed(5)
        orders.append(get_length_grouped_indices(lengths, config.batch_size))
    assert orders[0] == orders[1]


def test_lora_adapters_start_from_the_seed_and_targets_must_exist():
    def adapter_start(config: TrainConfig) -> dict[str, torch.Tensor]:
        base = models.load(models.DEFAULT_MODEL).model
        peft_model = training._apply_adapters(base, config)
        return {k: v.clone() for k, v in peft_model.state_dict().items() if "lora_A" in k}

    first, again = (adapter_start(TrainConfig(mode="lora", seed=3)) for _ in range(2))
    assert first and all(torch.equal(first[k], again[k]) for k in first)
    other = adapter_start(TrainConfig(mode="lora", seed=4))
    assert not all(torch.equal(first[k], other[k]) for k in first)
    typo = TrainConfig(mode="lora", lora_targets=("q_proj", "v_prj"))
    with pytest.raises(runs.TrainingError, match=r"\['v_prj'\] do not exist .*'v_proj'"):
        training._apply_adapters(models.load(models.DEFAULT_MODEL).model, typo)


def test_fp16_on_a_cpu_is_refused_not_recorded_and_ignored():
    if torch.cuda.is_available():
        pytest.skip("fp16 trains here")
    with pytest.raises(runs.TrainingError, match="fp16 needs a CUDA GPU"):
        training.check_hardware(TrainConfig(fp16=True))
    training.check_hardware(TrainConfig(bf16=True))  # CPU autocast: allowed


def test_tokens_per_second_of_a_validation_log_leaves_the_validation_out(caplog):
    from types import SimpleNamespace

    progress = training.ProgressLog()
    state = SimpleNamespace(
        num_input_tokens_seen=1000, global_step=10, max_steps=20, is_world_process_zero=True
    )
    progress.on_train_begin(None, SimpleNamespace(num_input_tokens_seen=0), None)
    progress.started -= 10.0  # 10 s since training began, 5 s of them the validation pass
    with caplog.at_level("INFO", logger="linklm.model.training"):
        progress.on_log(None, state, None, logs={"eval_loss": 1.0, "eval_runtime": 5.0})
    (message,) = [r.getMessage() for r in caplog.records]
    rate = float(message.rsplit(", ", 1)[1].split()[0].replace(",", ""))
    assert 190 < rate <= 200, message  # 1,000 tokens over 5 s, not over 10


def test_a_diverged_training_is_an_error_and_saves_no_run(small_dataset, tmp_path):
    config = _config(
        small_dataset, tmp_path, learning_rate=1000, weight_decay=0.3, logging_steps=1, eval_rows=0
    )
    with pytest.raises(training.TrainingError, match="training diverged; lower learning_rate"):
        training.train(config)
    assert not (tmp_path / "run" / "run.json").exists()
    assert not (tmp_path / "run" / "model").exists()


def test_loss_weights_that_are_both_zero_are_refused():
    with pytest.raises(ValidationError, match="both 0"):
        TrainConfig(channel_weight=0, throughput_weight=0)
    TrainConfig(channel_weight=0)  # the throughput alone still learns
