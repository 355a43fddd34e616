"""Install the project and its extras into this Python, keeping the torch already there.

    python scripts/install_keeping_torch.py gpu            # Colab: the gpu extra, Colab's torch
    python scripts/install_keeping_torch.py gpu --dry-run  # print the pip commands only

pyproject.toml pins torch==2.13.0, which PyPI serves on Linux as a CUDA 13.0 build (it
needs an NVIDIA driver >= 580). A runtime that ships its own torch, built for the driver it
has (Colab), keeps it: every other requirement is installed as declared, then the project
itself without dependencies. The platform's tests run on 2.13.0; another torch 2.x is what
the runtime chose.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def requirements(extras: list[str]) -> list[str]:
    """The project's requirements and those of ``extras``, torch left out."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(
            f"error: no extra {unknown[0]!r} in pyproject.toml ({', '.join(optional)})"
        )
    wanted = list(project["dependencies"]) + [r for e in extras for r in optional[e]]
    name = re.compile(r"^\s*([A-Za-z0-9_.-]+)")
    return [r for r in dict.fromkeys(wanted) if name.match(r).group(1).lower() != "torch"]


def commands(extras: list[str]) -> list[list[str]]:
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    return [pip + requirements(extras), pip + ["--no-deps", "-e", str(ROOT)]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("extras", nargs="*", help="extras of pyproject.toml, e.g. gpu")
    parser.add_argument("--dry-run", action="store_true", help="print the pip commands")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        if not args.dry_run:
            raise SystemExit(
                "error: no torch in this Python to keep; use pip install -e '.[EXTRAS]' instead"
            ) from None
    else:
        print(f"keeping torch {torch.__version__} (CUDA {torch.version.cuda})")
    for command in commands(args.extras):
        print(shlex.join(command))
        if not args.dry_run:
            subprocess.run(command, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
