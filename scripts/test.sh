#!/usr/bin/env bash
# The test command (README.md): installs what is missing, builds, and runs every CPU test.
# Two configurations, as CI requires: the default (CUDA + NCCL compiled in when the toolkit is
# present; its CPU tests run, GPU tests skip without a device) and a CPU-only build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
PY="$(bash scripts/python_env.sh)"
bash scripts/build.sh build -DTESSERA_TEST_PYTHON="$PY"
(cd build && ctest -L cpu -j2 --output-on-failure --timeout 900)
if [ -x /usr/local/cuda/bin/nvcc ] || command -v nvcc >/dev/null 2>&1; then
  echo "== CPU-only configuration (TESSERA_CUDA=OFF) =="
  bash scripts/build.sh build-cpu -DTESSERA_CUDA=OFF -DTESSERA_BUILD_BENCH=OFF -DTESSERA_TEST_PYTHON="$PY"
  # The Python tests drive the tessera binary end to end and do not depend on how kernels/ was
  # configured: they ran against the first build; here only the C++ tests run again.
  (cd build-cpu && ctest -L cpu -E '^py_' -j2 --output-on-failure --timeout 900)
fi
