#!/usr/bin/env bash
# The project's test command (README): the whole suite in .venv, then the mediapipe pose tests in
# .venv-pose when scripts/setup.sh made it.
set -euo pipefail
cd "$(dirname "$0")/.."
# one thread per process: the test models are tiny, and threads only thrash when processes share the cores
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
.venv/bin/python -m pytest -q "$@"
if [ -x .venv-pose/bin/python ] && [ $# -eq 0 ]; then
  .venv-pose/bin/python -m pytest -q tests/test_annotators_pose.py
fi
