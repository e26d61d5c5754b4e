#!/usr/bin/env bash
# Configures and builds Tessera into build/ (or $1). Extra arguments go to cmake.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${1:-build}"
shift || true
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$PWD}"
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/tessera-ccache}"
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"
# nvcc lives outside PATH on some installs.
[ -x /usr/local/cuda/bin/nvcc ] && export PATH="/usr/local/cuda/bin:$PATH"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
ninja -C "$BUILD_DIR" -j"${TESSERA_JOBS:-2}"
