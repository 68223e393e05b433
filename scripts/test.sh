#!/usr/bin/env bash
# The project's test command (README): the whole suite in .venv, then the mediapipe pose tests in
# .venv-pose when scripts/setup.sh made it.
# The suite runs on all cores (pytest-xdist, one worker per core; TEST_WORKERS=N sets the count, 0 runs in
# one process, e.g. for --pdb). --dist loadfile keeps each test file on one worker, so a file's
# module-scoped fixtures (tiny models, built folders) are made once.
set -euo pipefail
cd "$(dirname "$0")/.."
# one thread per process: the test models are tiny, and threads only thrash when processes share the cores
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
parallel=(-n "${TEST_WORKERS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}" --dist loadfile)
if ! .venv/bin/python -c "import xdist" 2>/dev/null; then
  echo "scripts/test.sh: pytest-xdist is missing from .venv (scripts/setup.sh installs it): one process" >&2
  parallel=()
fi
.venv/bin/python -m pytest -q "${parallel[@]}" "$@"
if [ -x .venv-pose/bin/python ] && [ $# -eq 0 ]; then
  .venv-pose/bin/python -m pytest -q tests/test_annotators_pose.py
fi
