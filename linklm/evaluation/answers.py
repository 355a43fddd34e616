"""Model answers on dataset rows: batched greedy generation and ranked channel candidates.

Greedy generation answers what a user would get; ranking scores every available channel by
the model's log-likelihood of answering it, which gives top-k and was the stronger channel
read-out in every run measured here. Unparseable answers are counted, never raised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from linklm.data.prompts import AnswerError
from linklm.errors import LinkLMError
from linklm.model import examples
from linklm.model.formats import PromptFormat


class ScoreError(LinkLMError):
    """A model scored a candidate NaN or infinite: its weights are damaged or diverged."""


@dataclass
class Answers:
    raw: list[str]
    channel: np.ndarray  # -1 where the answer did not parse
    throughput: np.ndarray  # nan where the answer did not parse
    valid: np.ndarray


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _max_new_tokens(prompt_format: PromptFormat) -> int:
    return 4 if prompt_format.kind == "numtok-v1" else 48


def _stop_at_closing_brace(prompt_format: PromptFormat, tokenizer) -> dict:
    """A JSON answer is complete at its closing brace: stop there, not at max_new_tokens.

    Number-token answers are two tokens and the end-of-turn marker, which stops them anyway.
    """
    if prompt_format.kind != "text":
        return {}
    return {"stop_strings": ["}"], "tokenizer": tokenizer}


@torch.inference_mode()
def generate(
    model, tokenizer, prompt_format: PromptFormat, rows: pl.DataFrame, batch_size: int = 64
) -> Answers:
    """Greedy answers for every row, batched with left padding and the KV cache."""
    model.eval()
    texts = examples.prompt_texts(rows, prompt_format, tokenizer)
    raw: list[str] = []
    for part in _batches(len(texts), batch_size):
        batch = tokenizer(texts[part], add_special_tokens=False, return_tensors="pt", padding=True)
        batch = batch.to(model.device)
        out = model.generate(
            **batch,
            max_new_tokens=_max_new_tokens(prompt_format),
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            **_stop_at_closing_brace(prompt_format, tokenizer),
        )
        raw += tokenizer.batch_decode(
            out[:, batch["input_ids"].shape[1] :], skip_special_tokens=False
        )
    return parse_all(raw, prompt_format)


def parse_all(raw: list[str], prompt_format: PromptFormat) -> Answers:
    channel = np.full(len(raw), -1, dtype=np.int64)
    throughput = np.full(len(raw), np.nan)
    valid = np.zeros(len(raw), dtype=bool)
    for i, text in enumerate(raw):
        cleaned = text.replace("<pad>", " ").strip()
        try:
            parsed = prompt_format.parse(cleaned)
        except AnswerError:
            continue
        valid[i] = True
        channel[i] = parsed.get("recommended_channel_mhz", -1)
        throughput[i] = parsed.get("expected_throughput_mbps", np.nan)
    return Answers(raw, channel, throughput, valid)


def _single_token_ids(
    tokenizer, prompt_format: PromptFormat, channels: list[int]
) -> list[int] | None:
    if prompt_format.kind != "numtok-v1":
        return None
    ids = [tokenizer.convert_tokens_to_ids(f"c{c}") for c in channels]
    return None if tokenizer.unk_token_id in ids else ids


@torch.inference_mode()
def rank_channels(
    model, tokenizer, prompt_format: PromptFormat, rows: pl.DataFrame, batch_size: int = 64
) -> list[list[tuple[int, float]]]:
    """Every row's available channels, best first, scored by the answer's log-likelihood."""
    model.eval()
    texts = examples.prompt_texts(rows, prompt_format, tokenizer)
    channels = rows["available_channels_mhz"].to_list()
    ranked: list[list[tuple[int, float]]] = []
    for part in _batches(len(texts), batch_size):
        if prompt_format.kind == "numtok-v1":  # a channel is one token: one forward per batch
            batch = tokenizer(
                texts[part], add_special_tokens=False, return_tensors="pt", padding=True
            ).to(model.device)
            logits = model(**batch, logits_to_keep=1).logits[:, -1, :].float()
            logprobs = torch.log_softmax(logits, dim=-1)
        for i, row_channels in enumerate(channels[part]):
            ids = _single_token_ids(tokenizer, prompt_format, row_channels)
            if ids is None:
                scores = _score_text_candidates(
                    model, tokenizer, texts[part][i], prompt_format, row_channels
                )
            else:
                scores = logprobs[i, ids].cpu().tolist()
            _check_finite(scores, row_channels)
            ranked.append(
                sorted(zip(row_channels, scores, strict=True), key=lambda cs: (-cs[1], cs[0]))
            )
    return ranked


def _check_finite(scores: list[float], channels: list[int]) -> None:
    """A NaN score would sort anywhere and print as invalid JSON: name it instead."""
    bad = [c for c, s in zip(channels, scores, strict=True) if not np.isfinite(s)]
    if bad:
        raise ScoreError(
            f"the model scored {len(bad)} channel(s) (e.g. {bad[0]} MHz) as NaN or infinite: "
            "its weights are damaged or training diverged; retrain or load another checkpoint"
        )


def _score_text_candidates(
    model, tokenizer, prompt: str, prompt_format: PromptFormat, channels: list[int]
) -> list[float]:
    """Sum of log-probs of the answer prefix naming each channel (multi-token answers)."""
    prefix = '{"recommended_channel_mhz": ' if prompt_format.target != "throughput" else ""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    scores = []
    for channel in channels:
        cand = tokenizer(prefix + str(channel), add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + cand], device=model.device)
        logprobs = torch.log_softmax(model(ids).logits[0, len(prompt_ids) - 1 : -1].float(), dim=-1)
        index = torch.arange(len(cand), device=model.device)
        picked = logprobs[index, torch.tensor(cand, device=model.device)]
        scores.append(float(picked.sum()))
    return scores
