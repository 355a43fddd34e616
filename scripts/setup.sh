#!/usr/bin/env bash
# Create .venv and install the project into it; re-installs only when pyproject.toml changes.
# Usage: bash scripts/setup.sh [extras]   e.g. "dev" for the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
stamp=".venv/.linklm-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) ${spec}"
if [ ! -f "$stamp" ] || ! grep -qxF "$want" "$stamp"; then
    echo "setup: installing ${spec} into .venv (first run takes a few minutes)" >&2
    .venv/bin/python -m pip install --disable-pip-version-check -q --upgrade pip
    # torch is pinned to 2.13.0 in pyproject.toml; install it first so nothing pulls another build
    # not --no-compile: with PYTHONDONTWRITEBYTECODE=1 (set on these machines) every process
    # would compile every module it imports, again (CI went from 17 to 30+ minutes)
    .venv/bin/python -m pip install --disable-pip-version-check -q "torch==2.13.0"
    .venv/bin/python -m pip install --disable-pip-version-check -q -e "$spec"
    echo "$want" >> "$stamp"
fi
