#!/usr/bin/env bash
# The main job, offline on the CPU: set up .venv, then run the demo flow.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m flows.demo "$@"
