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


def _max_new_tokens(prompt_format: PromptFormat, tokenizer) -> int:
    """Room for the longest answer and the end-of-turn marker: two tokens with number
    tokens, a dozen where a tokenizer spells digits one by one, a JSON object's length."""
    if prompt_format.kind != "numtok-v1":
        return 48
    return len(tokenizer(" c5180 q255", add_special_tokens=False)["input_ids"]) + 2


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
            max_new_tokens=_max_new_tokens(prompt_format, tokenizer),
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


def _has_channel_tokens(tokenizer) -> bool:
    return tokenizer.convert_tokens_to_ids("c5180") not in (None, tokenizer.unk_token_id)


# rows whose candidates run in one forward on the multi-token path: 8 rows of ~25 candidates
# hold 200 copies of a prompt's cache (about 0.7 GB for Gemma 3 270M's compact prompt)
TEXT_ROWS_PER_FORWARD = 8


@torch.inference_mode()
def rank_channels(
    model, tokenizer, prompt_format: PromptFormat, rows: pl.DataFrame, batch_size: int = 64
) -> list[list[tuple[int, float]]]:
    """Every row's available channels, best first, scored by the answer's log-likelihood."""
    model.eval()
    texts = examples.prompt_texts(rows, prompt_format, tokenizer)
    channels = rows["available_channels_mhz"].to_list()
    ranked: list[list[tuple[int, float]]] = []
    single = prompt_format.kind == "numtok-v1" and _has_channel_tokens(tokenizer)
    for part in _batches(len(texts), batch_size):
        ids = [_single_token_ids(tokenizer, prompt_format, c) for c in channels[part]]
        if single and None not in ids:  # a channel is one token: one forward per batch
            batch = tokenizer(
                texts[part], add_special_tokens=False, return_tensors="pt", padding=True
            ).to(model.device)
            logits = model(**batch, logits_to_keep=1).logits[:, -1, :].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            scored = [logprobs[i, row_ids].cpu().tolist() for i, row_ids in enumerate(ids)]
        else:  # a few rows at a time: each candidate holds a copy of its row's prompt cache
            scored = []
            for few in _batches(part.stop - part.start, TEXT_ROWS_PER_FORWARD):
                rows_now = slice(part.start + few.start, part.start + few.stop)
                scored += _score_text_candidates(
                    model, tokenizer, texts[rows_now], prompt_format, channels[rows_now]
                )
        for row_channels, scores in zip(channels[part], scored, strict=True):
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


def _candidate_text(prompt_format: PromptFormat, channel: int) -> str:
    """How an answer naming ``channel`` begins, in the format's words."""
    if prompt_format.kind == "numtok-v1":
        return f"c{channel}"
    prefix = '{"recommended_channel_mhz": ' if prompt_format.target != "throughput" else ""
    return prefix + str(channel)


def _log_softmax_head(model, hidden: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of the next token from final hidden states, as the model's own
    forward computes its logits (its output head, then Gemma's logit soft-capping if set)."""
    logits = model.get_output_embeddings()(hidden).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return torch.log_softmax(logits, dim=-1)


def _score_text_candidates(
    model, tokenizer, prompts: list[str], prompt_format: PromptFormat, channels: list[list[int]]
) -> list[list[float]]:
    """Sum of log-probs of the answer prefix naming each channel (multi-token answers), for
    a batch of rows.

    The prompts run once, as one left-padded batch (explicit positions, so a padded row sees
    the positions it would alone), and each row's cache is shared by its candidates, which
    then run as one batch of every row's candidates (right-padded: padding after a candidate
    cannot change its own positions). On Gemma 3 270M with the compact prompt, a row's 30
    candidates cost about its prompt's forward, where one forward of prompt and candidate
    each cost 30; a batch of rows makes those forwards matrix products the CPU runs
    faster than one row at a time."""
    device = model.device
    pad = tokenizer.pad_token_id or 0
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    longest = max(len(e) for e in encoded)
    ids = torch.tensor([[pad] * (longest - len(e)) + e for e in encoded], device=device)
    mask = torch.tensor([[0] * (longest - len(e)) + [1] * len(e) for e in encoded], device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    # only the last position's logits: a full-vocabulary head over every prompt position
    # (262k x 640 for Gemma) cost about as much as the whole candidate pass
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
    )
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
    cands = [
        [
            tokenizer(_candidate_text(prompt_format, c), add_special_tokens=False)["input_ids"]
            for c in row
        ]
        for row in channels
    ]
    scores = [[float(first[r, c[0]]) for c in row] for r, row in enumerate(cands)]
    flat = [(r, c) for r, row in enumerate(cands) for c in row]
    width = max(len(c) for _, c in flat)
    if width == 1:
        return scores
    owner = torch.tensor([r for r, _ in flat], device=device)
    cache = out.past_key_values
    cache.reorder_cache(owner)  # each candidate gets a copy of its row's prompt cache
    cand_ids = torch.tensor([c + [pad] * (width - len(c)) for _, c in flat], device=device)
    attention = torch.cat(
        [mask[owner], torch.ones(len(flat), width - 1, dtype=mask.dtype, device=device)], dim=1
    )
    steps = torch.arange(1, width, device=device)
    hidden = model.get_decoder()(
        input_ids=cand_ids[:, :-1],
        past_key_values=cache,
        attention_mask=attention,
        position_ids=positions[owner, -1:] + steps,
    ).last_hidden_state
    # Candidates of a row share prefixes ("c5" then "c51" ...): the vocabulary-wide head
    # runs once per distinct (row, prefix), a third of the positions (it was half the time)
    where: dict[tuple, int] = {}
    at = [
        [where.setdefault((r, tuple(c[: j + 1])), len(where)) for j in range(len(c) - 1)]
        for r, c in flat
    ]
    firsts = {u: (k, j) for k, row in enumerate(at) for j, u in enumerate(row)}
    k_idx, j_idx = (torch.tensor(v, device=device) for v in zip(*firsts.values(), strict=True))
    logprobs = _log_softmax_head(model, hidden[k_idx, j_idx])
    k = 0
    for r, row in enumerate(cands):
        for i, cand in enumerate(row):
            scores[r][i] += sum(float(logprobs[u, cand[j + 1]]) for j, u in enumerate(at[k]))
            k += 1
    return scores
