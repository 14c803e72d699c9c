#!/usr/bin/env bash
# CI: compile every kernels/*.cu with nvcc 13.0.88 from PyPI wheels (cached), to PTX for each target
# architecture and through ptxas to sm_90 cubins (catches register and PTX-level errors too).
# SCONCE_CI_CUDA_CHECK=1 also runs `cargo check --features cuda` (builds candle-kernels: slow).
set -euo pipefail
cd "$(dirname "$0")/.."
export SCONCE_CUDA_NVCC_ONLY=${SCONCE_CUDA_NVCC_ONLY:-$([ "${SCONCE_CI_CUDA_CHECK:-0}" = 1 ] && echo 0 || echo 1)}
start=$(date +%s)
# shellcheck source=scripts/cuda-env.sh
source scripts/cuda-env.sh
nvcc --version | tail -1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
archs=${SCONCE_CUDA_ARCH:-80,90}
shopt -s nullglob
files=(kernels/*.cu)
[ ${#files[@]} -gt 0 ] || { echo "no kernels/*.cu" >&2; exit 1; }
for cu in "${files[@]}"; do
  name=$(basename "$cu" .cu)
  for arch in ${archs//,/ }; do
    nvcc --ptx -O3 -std=c++17 --use_fast_math -Werror all-warnings "-arch=compute_$arch" -o "$out/$name.$arch.ptx" "$cu"
  done
  nvcc -cubin -O3 -std=c++17 --use_fast_math -arch=sm_90 -Xptxas -warn-spills,-warn-lmem-usage -o "$out/$name.cubin" "$cu"
  echo "ok  $cu"
done
echo "PTX compile: $(( $(date +%s) - start )) s"
if [ "${SCONCE_CI_CUDA_CHECK:-0}" = 1 ]; then
  SCONCE_CUDA_STUB=1 source scripts/cuda-env.sh
  t=$(date +%s)
  CARGO_TARGET_DIR=${SCONCE_CUDA_TARGET_DIR:-target/cuda-check} cargo check --workspace --features sconce-server/cuda
  echo "cargo check --features cuda: $(( $(date +%s) - t )) s"
fi
