"""The default model's number words added to a pretrained tokenizer (``--prompt number-tokens``).

Gemma's tokenizer spells ``c5180`` as five tokens (``▁c 5 1 8 0``); the default model
reached 92 % channel accuracy only once every channel and every level was one token
(PITFALLS.md, "Making the task learnable"). Here the number words of ``numtok`` that the
tokenizer lacks are added as tokens (each takes the space before it, so a prompt word is one
token), the embedding grows by that many rows (initialised at the mean of the others), and
LoRA trains those rows too (peft's ``trainable_token_indices``) while the rest of the
embedding stays frozen. The tokenizer is saved with the run, so the run reads its prompts
the same way everywhere.
"""

from __future__ import annotations

import logging
import re

from tokenizers import AddedToken

from linklm.model import numtok

log = logging.getLogger(__name__)

# the number families a compact prompt and answer use (numtok.NUMBER_FAMILIES) and bandwidths
_NUMBER_WORD = re.compile(rf"^([{''.join(numtok.NUMBER_FAMILIES)}]-?\d+|b\d+)$")


def number_words() -> list[str]:
    return [w for w in numtok.vocabulary() if _NUMBER_WORD.match(w)]


def has_number_tokens(tokenizer) -> bool:
    """Every number word is one token already (the default model's vocabulary, or a run
    trained with number tokens)."""
    vocab = tokenizer.get_vocab()
    return all(w in vocab for w in number_words())


def add_number_tokens(model, tokenizer) -> list[int]:
    """Add the number words the tokenizer lacks, resize the model's embeddings; returns the
    new tokens' ids (empty when nothing was missing)."""
    vocab = tokenizer.get_vocab()
    missing = [w for w in number_words() if w not in vocab]
    if not missing:
        return []
    tokenizer.add_tokens(
        [AddedToken(w, lstrip=True, rstrip=False, normalized=False, special=False) for w in missing]
    )
    model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    ids = tokenizer.convert_tokens_to_ids(missing)
    log.info("added %d number tokens to the tokenizer (%d in all)", len(ids), len(tokenizer))
    return ids


def fit_embeddings(base, adapter_dir) -> None:
    """Grow a base model's embeddings to its adapter's tokenizer before the adapter loads:
    an adapter trained with number tokens carries more embedding rows than its base."""
    from transformers import AutoTokenizer

    size = len(AutoTokenizer.from_pretrained(adapter_dir))
    if base.get_input_embeddings().num_embeddings < size:
        base.resize_token_embeddings(size, mean_resizing=False)
