#!/usr/bin/env bash
# The test command: set up .venv with the dev tools, lint, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
.venv/bin/ruff check .
.venv/bin/ruff format --check .
rc=0
.venv/bin/python -m pytest -q --timeout=900 "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: the suite is broken (exit 5)" >&2
    exit 1
fi
exit "$rc"
