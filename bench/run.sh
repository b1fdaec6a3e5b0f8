#!/usr/bin/env bash
# Thin wrapper: run the benchmark with the project's venv (see bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/work/venv/bin/python
[ -x "$PY" ] || PY=python3
BENCH_COMMAND="bash bench/run.sh${*:+ $*}" exec "$PY" bench/run.py "$@"
