"""How a model reads a link and writes its answer; saved beside the model's weights.

Training, evaluation and serving all call the same ``PromptFormat`` loaded from the model
folder (``linklm_prompt.json``), so a model is always shown links the way it was trained.
Two kinds exist: ``numtok-v1`` (the quietest scan pairs as number words such as ``c5180 r7``
and a two-word answer ``c5115 q201``; the offline default model has one token per word) and
``text`` (the data flow's readable template and a JSON answer).

A pretrained tokenizer such as Gemma's reads either; ``TrainConfig.prompt`` picks one
(``choose``). Measured with Gemma 3's tokenizer on 1,000 test rows: the text prompt and
answer take a median of 543 tokens (350-806), the compact one 102 (97-108), because Gemma
spells every digit as a token; with the number words added to its vocabulary
(``number-tokens``, ``linklm.model.vocab``) each is one token again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from linklm.config import Target
from linklm.data import prompts
from linklm.model import numtok

FILE = "linklm_prompt.json"


class PromptFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["numtok-v1", "text"] = "text"
    target: Target = "both"
    template: str | None = None
    # numtok only: how many of the quietest scan pairs the prompt lists (None: every one).
    scan_channels: int | None = Field(default=None, ge=1)
    # numtok only: levels relative to the quietest pair (``r`` tokens) instead of the floor.
    relative_levels: bool = False

    def user_messages(self, df: pl.DataFrame) -> list[str]:
        if self.kind == "numtok-v1":
            return numtok.render_prompts(df, self.scan_channels, self.relative_levels).to_list()
        return prompts.render_prompts(df, self.template, self.target).to_list()

    def answers(self, df: pl.DataFrame) -> list[str]:
        if self.kind == "numtok-v1":
            return numtok.render_answers(df, self.target).to_list()
        return prompts.render_answers(df, self.target).to_list()

    def parse(self, text: str) -> dict[str, float | int]:
        """The answer's fields, or ``prompts.AnswerError`` for an answer that does not parse."""
        if self.kind == "numtok-v1":
            return numtok.parse_answer(text, self.target)
        return prompts.parse_answer(text, self.target)

    def save(self, folder: Path) -> None:
        (Path(folder) / FILE).write_text(json.dumps(self.model_dump(), indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> PromptFormat:
        """The folder's format; a checkpoint without one reads the readable text format."""
        path = Path(folder) / FILE
        if not path.exists():
            return cls()
        return cls.model_validate_json(path.read_text())


def compact(target: Target = "both") -> PromptFormat:
    """The default model's reading of a link (the 8 quietest scan pairs, levels above the
    quietest) as plain words, for any tokenizer."""
    return PromptFormat(
        kind="numtok-v1",
        target=target,
        scan_channels=numtok.SCAN_CHANNELS,
        relative_levels=True,
    )


def choose(choice: str, saved: PromptFormat | None, target: Target) -> PromptFormat:
    """The format a run trains with. ``auto``: the model folder's own (``saved``; a run of
    ours, or the default model), else ``compact``; ``text`` and ``compact`` as named;
    ``number-tokens`` is ``compact`` read with the number words added to the tokenizer."""
    if choice == "auto":
        chosen = saved if saved is not None else compact(target)
    elif choice == "text":
        chosen = PromptFormat()
    else:
        chosen = compact(target)
    return chosen.model_copy(update={"target": target})
