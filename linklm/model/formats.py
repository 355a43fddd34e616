"""How a model reads a link and writes its answer; saved beside the model's weights.

Training, evaluation and serving all call the same ``PromptFormat`` loaded from the model
folder (``linklm_prompt.json``), so a model is always shown links the way it was trained.
Two kinds exist: ``numtok-v1`` (number tokens, for the offline default model's own
vocabulary) and ``text`` (the data flow's readable template and a JSON answer, for
pretrained tokenizers such as Gemma's).
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
