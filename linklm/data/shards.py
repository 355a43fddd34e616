"""Deterministic train/validation/test splits and conversational JSONL shards.

A row's split is a pure function of its scenario_id and a salt (splitmix64 of the id and
the salt's SHA256 -> [0, 1)),
so it never moves when the dataset grows, a chunk is regenerated or workers change. Shards
are JSONL files ``{split}-00000-of-00003.jsonl`` of ``{"scenario_id", "messages": [user,
assistant]}``; a dataset card (README.md with ``configs``) makes the folder loadable with
``datasets.load_dataset(folder)``, streaming too.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import polars as pl

from linklm import atomic
from linklm.config import PromptConfig, SplitConfig
from linklm.data import dataset, prompts

SPLITS = ("train", "validation", "test")
SHARD_DIR = "shards"
RECORD = "shards.json"


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def split_of(scenario_ids: np.ndarray, config: SplitConfig) -> np.ndarray:
    """'train' / 'validation' / 'test' per id, stable across runs and machines."""
    # the whole salt decides: salts sharing a prefix ("...-v1", "...-v2") split differently
    salt = int.from_bytes(hashlib.sha256(config.salt.encode()).digest()[:8], "little")
    h = _splitmix64(np.asarray(scenario_ids, dtype=np.uint64) ^ np.uint64(salt))
    u = (h >> np.uint64(11)).astype(np.float64) / float(2**53)
    return np.where(
        u < config.train, "train", np.where(u < config.train + config.val, "validation", "test")
    )


def conversations(df: pl.DataFrame, prompt: PromptConfig) -> pl.DataFrame:
    """scenario_id + messages (user prompt, assistant answer) for every row of ``df``."""
    user = prompts.render_prompts(df, prompt.template, prompt.target)
    answer = prompts.render_answers(df, prompt.target)
    return pl.DataFrame(
        {"scenario_id": df["scenario_id"], "user": user, "assistant": answer}
    ).select(
        "scenario_id",
        pl.concat_list(
            pl.struct(role=pl.lit("user"), content=pl.col("user")),
            pl.struct(role=pl.lit("assistant"), content=pl.col("assistant")),
        ).alias("messages"),
    )


def _card(split_files: dict[str, list[str]]) -> str:
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split, files in split_files.items():
        if files:
            lines += [f"  - split: {split}", f'    path: "{split}-*.jsonl"']
    lines += [
        "task_categories:",
        "- text-generation",
        "tags:",
        "- wifi",
        "- link-planning",
        "- synthetic",
        "---",
        "",
        "# linklm link-planning conversations",
        "",
        "Synthetic 5 GHz point-to-point link scenarios (DATA_SPEC.md physics) as chat",
        "conversations: the user gives the link's inputs, the assistant answers the",
        "recommended channel and expected throughput as JSON. Load with",
        "`datasets.load_dataset(<this folder>)`.",
        "",
    ]
    return "\n".join(lines)


def shard_key(
    dataset_sha: str, split: SplitConfig, prompt: PromptConfig, shard_rows: int, exclude: list[int]
) -> dict:
    """Everything the shard bytes depend on."""
    return {
        "dataset_sha256": dataset_sha,
        "split": split.model_dump(),
        "prompt": prompt.model_dump(),
        "shard_rows": shard_rows,
        "excluded_ids": sorted(set(exclude)),
    }


def current_record(out_dir: Path, key: dict) -> dict | None:
    """The shards record when every file exists and hashes to it for ``key``, else None."""
    out_dir = Path(out_dir)
    record = atomic.read_json_or_none(out_dir / SHARD_DIR / RECORD)
    if not record or record.get("key") != key:
        return None
    for f in record["files"]:
        if (
            not (out_dir / f["file"]).exists()
            or atomic.sha256_file(out_dir / f["file"]) != f["sha256"]
        ):
            return None
    return record


def write_shards(
    out_dir: Path,
    split: SplitConfig,
    prompt: PromptConfig,
    shard_rows: int = 50_000,
    exclude_ids: list[int] | None = None,
) -> dict:
    """Write shards for an intact dataset (quarantined ids excluded); skip if already current."""
    out_dir = Path(out_dir)
    prompts.template_fields(prompt.template or prompts.DEFAULT_TEMPLATE)  # fail before any work
    manifest = dataset.require_intact(out_dir)
    exclude = sorted(set(exclude_ids or []))
    key = shard_key(manifest["dataset_sha256"], split, prompt, shard_rows, exclude)
    shard_dir = out_dir / SHARD_DIR
    previous = current_record(out_dir, key)
    if previous:
        return previous | {"skipped": True}

    paths = dataset.chunk_paths(out_dir, manifest)
    ids = pl.concat([pl.read_parquet(p, columns=["scenario_id"]) for p in paths])["scenario_id"]
    kept = ids.filter(~ids.is_in(exclude)) if exclude else ids
    labels, counts = np.unique(split_of(kept.to_numpy(), split), return_counts=True)
    rows_per_split = {s: int(dict(zip(labels, counts, strict=True)).get(s, 0)) for s in SPLITS}
    n_files = {s: math.ceil(n / shard_rows) for s, n in rows_per_split.items()}
    names = {
        s: [f"{s}-{i:05d}-of-{n_files[s]:05d}.jsonl" for i in range(n_files[s])] for s in SPLITS
    }

    # Stream chunks; each split fills its shard files in order. Everything is built in a
    # temporary folder that replaces the old shards only once it is complete.
    with atomic.atomic_dir(shard_dir) as build_dir:
        _stream(paths, exclude, split, prompt, shard_rows, names, build_dir)
        atomic.write_text(build_dir / "README.md", _card(names))
        files = [
            {
                "file": f"{SHARD_DIR}/{name}",
                "split": s,
                "sha256": atomic.sha256_file(build_dir / name),
            }
            for s in SPLITS
            for name in names[s]
        ]
        record = {"key": key, "rows": rows_per_split, "files": files}
        atomic.write_json(build_dir / RECORD, record)
    return record | {"skipped": False}


def _stream(
    paths: list[Path],
    exclude: list[int],
    split: SplitConfig,
    prompt: PromptConfig,
    shard_rows: int,
    names: dict[str, list[str]],
    shard_dir: Path,
) -> None:
    written = {s: 0 for s in SPLITS}
    buffers: dict[str, list[pl.DataFrame]] = {s: [] for s in SPLITS}

    def flush(s: str, final: bool = False) -> None:
        while buffers[s] and (final or sum(b.height for b in buffers[s]) >= shard_rows):
            frame = pl.concat(buffers[s])
            head, rest = frame.head(shard_rows), frame.slice(shard_rows)
            index = written[s] // shard_rows
            head.write_ndjson(shard_dir / names[s][index])
            written[s] += head.height
            buffers[s] = [rest] if rest.height else []

    for path in paths:
        frame = pl.read_parquet(path)
        if exclude:
            frame = frame.filter(~pl.col("scenario_id").is_in(exclude))
        conv = conversations(frame, prompt).with_columns(
            pl.Series("split", split_of(frame["scenario_id"].to_numpy(), split))
        )
        for s in SPLITS:
            part = conv.filter(pl.col("split") == s).drop("split")
            if part.height:
                buffers[s].append(part)
                flush(s)
    for s in SPLITS:
        flush(s, final=True)


def read_split(out_dir: Path, split: str) -> list[dict]:
    """All conversations of one split (for tests and small evaluations)."""
    rows = []
    for path in sorted((Path(out_dir) / SHARD_DIR).glob(f"{split}-*.jsonl")):
        with open(path, encoding="utf-8") as fh:
            rows += [json.loads(line) for line in fh]
    return rows
