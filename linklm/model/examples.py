"""Rows of a dataset split -> token ids through a model's prompt format and chat template.

Training, evaluation and prediction tokenise the same way: the chat template renders the
user turn with the generation prompt, and the answer (plus the end-of-turn marker) follows,
so ``prompt + answer`` is exactly what the template renders for the whole conversation
(a test pins this). Loss is computed on the answer tokens only.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import torch
from pydantic import ValidationError

from linklm import atomic
from linklm.config import SplitConfig
from linklm.data import dataset, shards, validate
from linklm.errors import DatasetError
from linklm.model.formats import PromptFormat

if TYPE_CHECKING:
    from datasets import Dataset

log = logging.getLogger(__name__)

END_OF_TURN = "<end_of_turn>"


_WARNED_DEFAULT_SPLIT: set[str] = set()


def split_config_of(data_dir: Path) -> SplitConfig:
    """The split the data flow used for this folder's shards; the default for a folder with
    no shards yet (``dataset.build`` alone). Shards without a readable record are an error,
    not the default: a split of other fractions would move test rows into training."""
    shard_dir = Path(data_dir) / shards.SHARD_DIR
    record = atomic.read_json_or_none(shard_dir / shards.RECORD)
    if record is None and not shard_dir.exists():
        if str(data_dir) not in _WARNED_DEFAULT_SPLIT:  # once per folder, not per split read
            _WARNED_DEFAULT_SPLIT.add(str(data_dir))
            log.warning("%s: no shards yet, so the default split (%s)", data_dir, SplitConfig())
        return SplitConfig()
    try:
        return SplitConfig(**record["key"]["split"])
    except (TypeError, KeyError, ValidationError):
        raise DatasetError(
            f"{shard_dir / shards.RECORD}: missing or not a shards record, so the split of "
            "this folder's shards is unknown; write the shards again (python -m flows.data "
            "--out-dir with the same options) or delete shards/"
        ) from None


SPLIT_KEY = "split"  # in run.json and the run's config file: the split a run trained on


def split_record(data_dir: Path, manifest: dict) -> dict:
    """The split a training reads from ``data_dir``: its fractions and salt, and the SHA256
    of the ids it puts in training (sorted, as little-endian uint64). Recorded in run.json,
    so an evaluation on the same dataset split another way, which would score the model on
    rows it trained on, is refused (``training_rows_among``)."""
    config = split_config_of(data_dir)
    ids = _all_ids(data_dir, manifest).to_numpy()
    train = np.sort(ids[shards.split_of(ids, config) == "train"]).astype("<u8")
    return config.model_dump() | {"train_ids_sha256": hashlib.sha256(train.tobytes()).hexdigest()}


MIX_KEY = "mix"  # in run.json: the folders whose training rows were mixed in, and how


def weighted(rows: pl.DataFrame, weight: float, seed: int) -> pl.DataFrame:
    """``rows`` as a weight counts them: 3 is every row three times, 0.5 a seeded half,
    2.5 every row twice and a seeded half once more."""
    whole, fraction = int(weight), weight - int(weight)
    parts = [rows] * whole
    if fraction > 0:
        parts.append(rows.sample(fraction=fraction, seed=seed, shuffle=False))
    return pl.concat(parts) if parts else rows.head(0)


def mixed_rows(
    train_rows: pl.DataFrame, sources: list[tuple[Path, float]], seed: int
) -> tuple[pl.DataFrame, list[dict]]:
    """``train_rows`` with the training rows of each (folder, weight) joined, and what
    run.json records of each: its dataset SHA256 and split (so an evaluation on that folder
    knows which rows the run trained on), its rows and the rows it added."""
    parts, records = [train_rows], []
    for folder, weight in sources:
        manifest = dataset.require_intact(folder)
        rows = split_rows(folder, "train", None, manifest)
        if rows.height == 0:
            raise DatasetError(f"{folder}: its train split is empty, nothing to mix in")
        added = weighted(rows, weight, seed)
        parts.append(added)
        records.append(
            {
                "data_dir": str(folder),
                "weight": weight,
                "dataset_sha256": manifest["dataset_sha256"],
                SPLIT_KEY: split_record(folder, manifest),
                "train_rows": rows.height,
                "rows_added": added.height,
            }
        )
        log.info(
            "mixed in %s: %d training rows x %g = %d", folder, rows.height, weight, added.height
        )
    return (pl.concat(parts) if records else train_rows), records


def training_rows_among(run: dict, manifest: dict, ids: pl.Series) -> int | None:
    """How many of ``ids`` (rows of the dataset ``manifest`` describes) the run could have
    trained on: those its recorded split put in training, where the dataset is the one it
    trained on or one it mixed in. None where that cannot be known (a run saved before
    splits were recorded); 0 for another dataset (its ids name other rows)."""
    record = run.get(SPLIT_KEY)
    if not isinstance(record, dict):
        return None
    sources = [(run.get("dataset_sha256"), record)] + [
        (m.get("dataset_sha256"), m.get(SPLIT_KEY)) for m in run.get(MIX_KEY) or []
    ]
    trained = 0
    for sha, split in sources:
        if sha != manifest["dataset_sha256"] or not isinstance(split, dict):
            continue
        config = SplitConfig(**{k: split[k] for k in ("train", "val", "salt")})
        trained = max(trained, int((shards.split_of(ids.to_numpy(), config) == "train").sum()))
    return trained


def _all_ids(data_dir: Path, manifest: dict) -> pl.Series:
    paths = [str(p) for p in dataset.chunk_paths(Path(data_dir), manifest)]
    return pl.scan_parquet(paths).select("scenario_id").collect()["scenario_id"]


def split_rows(
    data_dir: Path, split: str, max_rows: int | None = None, manifest: dict | None = None
) -> pl.DataFrame:
    """The rows of one split of an intact dataset, quarantined rows left out, in id order.

    Pass the ``manifest`` that ``dataset.require_intact`` returned to skip hashing every
    chunk again; without it the dataset is verified here.
    """
    data_dir = Path(data_dir)
    manifest = manifest or dataset.require_intact(data_dir)
    rows = pl.scan_parquet([str(p) for p in dataset.chunk_paths(data_dir, manifest)])
    ids = _all_ids(data_dir, manifest)
    chosen = ids.filter(
        pl.Series(shards.split_of(ids.to_numpy(), split_config_of(data_dir)) == split)
    )
    report = data_dir / validate.REPORT_DIR / "problems.csv"
    if report.exists():
        bad = validate.quarantined_ids(data_dir)
        if bad:
            chosen = chosen.filter(~chosen.is_in(bad))
    if max_rows is not None:
        chosen = chosen.head(max_rows)
    return rows.filter(pl.col("scenario_id").is_in(chosen.implode())).collect()


def prompt_texts(df: pl.DataFrame, prompt_format: PromptFormat, tokenizer) -> list[str]:
    """The chat-templated user turns, ending with the generation prompt."""
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        for text in prompt_format.user_messages(df)
    ]


def answer_suffix(tokenizer) -> str:
    """What the chat template writes after an assistant answer, up to the end-of-turn marker."""
    sentinel = "LINKLMANSWER"
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": "u"}, {"role": "assistant", "content": sentinel}],
        tokenize=False,
    )
    after = full.split(sentinel, 1)[1]
    if END_OF_TURN in after:
        return after[: after.index(END_OF_TURN) + len(END_OF_TURN)]
    return tokenizer.eos_token or ""


def tokenize(df: pl.DataFrame, prompt_format: PromptFormat, tokenizer) -> Dataset:
    """input_ids, labels (-100 on the prompt) and length for every row.

    The whole conversation is tokenised as one text (so a subword tokenizer sees the same
    boundaries as at inference), and the prompt's tokens are found from character offsets.
    """
    prompts = prompt_texts(df, prompt_format, tokenizer)
    suffix = answer_suffix(tokenizer)
    full = [p + a + suffix for p, a in zip(prompts, prompt_format.answers(df), strict=True)]
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    input_ids, labels = [], []
    for ids, offsets, prompt in zip(
        encoded["input_ids"], encoded["offset_mapping"], prompts, strict=True
    ):
        n_prompt = sum(1 for start, _ in offsets if start < len(prompt.rstrip()))
        input_ids.append(ids)
        labels.append([-100] * n_prompt + ids[n_prompt:])
    from datasets import Dataset  # 1-2 s to import: a predicting process never needs it

    return Dataset.from_dict(
        {
            "scenario_id": df["scenario_id"].to_list(),
            "input_ids": input_ids,
            "labels": labels,
            "length": [len(x) for x in input_ids],
        }
    )


class LeftPadCollator:
    """Left-pads a batch so every answer ends at the last position (cheap answer-only logits)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        ids = np.full((len(features), width), self.pad_token_id, dtype=np.int64)
        labels = np.full((len(features), width), -100, dtype=np.int64)
        mask = np.zeros((len(features), width), dtype=np.int64)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, width - n :] = f["input_ids"]
            labels[i, width - n :] = f["labels"]
            mask[i, width - n :] = 1
        positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
        return {
            "input_ids": torch.from_numpy(ids),
            "attention_mask": torch.from_numpy(mask),
            "position_ids": torch.from_numpy(positions),
            "labels": torch.from_numpy(labels),
        }
