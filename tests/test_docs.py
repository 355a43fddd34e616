"""Every command the README and the guides show is one the code accepts, as written.

Each ``python -m flows.*``, ``python -m deployments`` and ``python benchmarks/*.py`` line of a
``bash`` block is parsed by the real command's own argument parser (stopped right after
parsing, so nothing runs): an option renamed or removed in the code fails here with the file
and the line. The README's length is pinned too: it is a user's guide, the rest is in docs/.
"""

from __future__ import annotations

import argparse
import importlib
import re
import runpy
import shlex
import sys

import pytest
from conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPTS = [ROOT / "scripts" / "gpu_check.sh"]  # read whole, as one bash block
BLOCK = re.compile(r"^```bash\n(.*?)^```", re.M | re.S)
PYTHON = re.compile(r'(?:(?:\.venv/bin/)?python3?|"\$PY") (-m [\w.]+|benchmarks/\w+\.py)(.*)')


def _words(shell: str) -> list[str]:
    """The command's own arguments: shell words up to a redirection, pipe or list operator."""
    lexer = shlex.shlex(shell, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = []
    for word in lexer:
        if word and set(word) <= set("<>|&;()"):
            break
        words.append(word)
    return words


def _commands() -> list[tuple[str, str, list[str]]]:
    """(where, target, argv) of every Python command in a bash block of the docs."""
    found = []
    for doc in [*DOCS, *SCRIPTS]:
        text = doc.read_text()
        blocks = BLOCK.finditer(text) if doc.suffix == ".md" else [_WholeFile(text)]
        for block in blocks:
            first_line = text[: block.start()].count("\n") + 2 if block.start() >= 0 else 1
            lines = block.group(1).replace("\\\n", " \n").split("\n")
            for offset, line in enumerate(lines):
                for part in line.split(" | "):
                    match = PYTHON.search(part)
                    if match is None:
                        continue
                    argv = _words(match.group(2))
                    target = match.group(1).removeprefix("-m ")
                    where = f"{doc.relative_to(ROOT)}:{first_line + offset}"
                    found.append((where, target, argv))
    return found


class _WholeFile:
    """A shell script read as one bash block (the shape of a regex match)."""

    def __init__(self, text: str):
        self.text = text

    def start(self) -> int:
        return -1  # its first line is line 1

    def group(self, _: int) -> str:
        return self.text


COMMANDS = _commands()


class _Parsed(Exception):
    pass


@pytest.fixture
def parse_only(monkeypatch):
    """Every argparse parser stops with what it parsed, so a command is checked, not run."""

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        raise _Parsed(namespace)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)


def test_the_docs_show_commands_and_the_readme_stays_short():
    assert len(COMMANDS) >= 40, "the docs' commands were not found: the pattern is stale"
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize(("where", "target", "argv"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_a_documented_command_parses(where, target, argv, parse_only, monkeypatch, capsys):
    if target.endswith(".py"):
        monkeypatch.setattr(sys, "argv", [target, *argv])
        monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
        run = lambda: runpy.run_path(str(ROOT / target), run_name="__main__")  # noqa: E731
    else:
        module = importlib.import_module(
            target if target != "deployments" else "deployments.__main__"
        )
        run = lambda: module.main(argv)  # noqa: E731
    try:
        run()
    except _Parsed:
        return
    except SystemExit as exit_:
        message = capsys.readouterr().err.strip()
        if exit_.code == 0 and "--help" in argv:
            return
        pytest.fail(f"{where}: `{target} {' '.join(argv)}` was refused: {message}")
    pytest.fail(f"{where}: `{target} {' '.join(argv)}` never parsed its arguments")
