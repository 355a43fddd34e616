"""notebooks/demo.ipynb runs as a user runs it: every cell, in a real Jupyter kernel.

Only the config cell changes (a small dataset and a few training steps), the way a user edits
it; the notebook's other cells run as committed, from the notebooks/ folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT
from nbclient import NotebookClient


@pytest.mark.slow
def test_demo_notebook_runs_headless_with_small_settings(tmp_path):
    nb = nbformat.read(ROOT / "notebooks" / "demo.ipynb", as_version=4)
    config = next(c for c in nb.cells if c.cell_type == "code" and "# Config" in c.source)
    out_dir = tmp_path / "demo-notebook"
    config.source = "\n".join(
        [
            'MODE = "full"',
            "N_ROWS = 1_500",
            "EPOCHS = 0.1",
            "BATCH_SIZE = 16",
            "EVAL_ROWS = 40",
            f"OUT_DIR = {json.dumps(str(out_dir))}",
        ]
    )
    NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT / "notebooks")}},
    ).execute()

    printed = "".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
    )
    assert "report:" in printed, printed
    report = Path(printed.split("report:", 1)[1].split()[0])
    assert report.is_file() and report.is_relative_to(out_dir)
    shown = nb.cells[-1].outputs[0]["data"]["text/markdown"]
    assert shown == report.with_name("report.md").read_text()
