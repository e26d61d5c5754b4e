#!/usr/bin/env bash
# Packs the CUDA test executables and the CUDA kernel benchmark of a CUDA build into one folder
# that a lent GPU machine (no Debian libraries, no package registries; see docs/gpu-validation.md)
# can run: the executables, the shared libraries they need that are not part of glibc, libstdc++
# or the CUDA toolkit (the GPU image has its own CUDA 13), and run.sh.
# Usage: bash scripts/gpu_bundle.sh [build-dir] [out-dir]     (default: build gpu_bundle)
# Then on the GPU machine: bash gpu_bundle/run.sh "$OUT"  (logs and a summary go to $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
OUT_DIR="${2:-gpu_bundle}"
rm -rf "$OUT_DIR"
mkdir -p "$OUT_DIR/bin" "$OUT_DIR/lib"
shopt -s nullglob
bins=("$BUILD"/tests/*_cuda_test "$BUILD"/tests/*_multi_gpu_test "$BUILD"/bench/cuda_kernels_bench)
[ ${#bins[@]} -gt 0 ] || { echo "gpu_bundle: no CUDA tests in $BUILD (CUDA build?)"; exit 1; }
for b in "${bins[@]}"; do
  cp "$b" "$OUT_DIR/bin/"
  ldd "$b" | awk '/=> \// {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libgcc_s*|libstdc++*|ld-linux*|libpthread*|libdl.so*|librt.so*) ;;
      libcuda*|libcublas*|libnccl*|libnvidia*) ;;
      *) cp -Ln "$lib" "$OUT_DIR/lib/" ;;
    esac
  done
done
cat > "$OUT_DIR/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs every bundled CUDA test and the benchmark; writes logs and summary.txt under $1 (or ./out).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
LOG="${1:-$HERE/out}"
mkdir -p "$LOG"
CUDA_LIBS=$(ls -d /usr/local/cuda/lib64 /usr/local/cuda/lib 2>/dev/null | tr '\n' ':')
NCCL_LIB=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null || true)
export LD_LIBRARY_PATH="$HERE/lib:${CUDA_LIBS}${NCCL_LIB}:${LD_LIBRARY_PATH:-}"
export TESSERA_TESTDATA="${TESSERA_TESTDATA:-/nonexistent}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$LOG/gpu.txt" 2>&1
: > "$LOG/summary.txt"
for t in "$HERE"/bin/*_test; do
  name=$(basename "$t")
  if "$t" > "$LOG/$name.log" 2>&1; then r=PASS; else r=FAIL; fi
  counts=$(grep -E '^\[  (PASSED|FAILED|SKIPPED) ? *\] [0-9]+ tests?' "$LOG/$name.log" | tr -s ' ' | tr '\n' ' ')
  echo "$r $name $counts" >> "$LOG/summary.txt"
  grep -E '^\[  FAILED  \] [A-Za-z]' "$LOG/$name.log" | sort -u >> "$LOG/summary.txt"
done
"$HERE/bin/cuda_kernels_bench" > "$LOG/cuda_kernels_bench.log" 2>&1 || echo "FAIL bench" >> "$LOG/summary.txt"
cat "$LOG/gpu.txt" "$LOG/summary.txt" "$LOG/cuda_kernels_bench.log"
RUN
chmod +x "$OUT_DIR/run.sh"
du -sh "$OUT_DIR"
