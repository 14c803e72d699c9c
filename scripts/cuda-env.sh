#!/usr/bin/env bash
# Source this: installs the CUDA 13.0 toolchain from PyPI wheels into a cache (once) and exports
# CUDA_ROOT, PATH, CUDA_COMPUTE_CAP, CUDARC_CUDA_VERSION. Follows ../shared/cuda/recipe.sh.
#   SCONCE_CUDA_CACHE (default ~/.cache/sconce-cuda)  SCONCE_CUDA_STUB=1 also builds the link-only libcuda stub.
# Never use an nvcc newer than 13.0: the device's 580 driver rejects newer PTX.
SCONCE_CUDA_CACHE=${SCONCE_CUDA_CACHE:-$HOME/.cache/sconce-cuda}
export CUDA_ROOT=$SCONCE_CUDA_CACHE/pycuda13/nvidia/cu13
_sconce_wheels_nvcc="nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-cuda-runtime==13.0.96"
_sconce_wheels_libs="nvidia-cublas==13.1.0.3 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88"
_sconce_cuda_install() {
  local wheels=$_sconce_wheels_nvcc
  [ "${SCONCE_CUDA_NVCC_ONLY:-0}" = 1 ] || wheels="$wheels $_sconce_wheels_libs"
  mkdir -p "$SCONCE_CUDA_CACHE"
  [ -x "$SCONCE_CUDA_CACHE/venv/bin/pip" ] || python3 -m venv "$SCONCE_CUDA_CACHE/venv" || return 1
  # shellcheck disable=SC2086
  "$SCONCE_CUDA_CACHE/venv/bin/pip" install -q --no-deps --target "$SCONCE_CUDA_CACHE/pycuda13" $wheels || return 1
}
if [ ! -x "$CUDA_ROOT/bin/nvcc" ] || { [ "${SCONCE_CUDA_NVCC_ONLY:-0}" != 1 ] && [ ! -e "$CUDA_ROOT/lib/libcublas.so.13" ]; }; then
  _sconce_cuda_install || { echo "cuda-env: pip install of the CUDA 13.0 wheels failed" >&2; return 1 2>/dev/null || exit 1; }
fi
if [ -e "$CUDA_ROOT/lib/libcublas.so.13" ]; then
  (cd "$CUDA_ROOT/lib" && for l in cublas cublasLt nvrtc cudart; do ln -sf "lib$l.so.13" "lib$l.so"; done &&
    ln -sf libcurand.so.10 libcurand.so)
fi
if [ "${SCONCE_CUDA_STUB:-0}" = 1 ] && [ ! -e "$CUDA_ROOT/lib/stubs/libcuda.so" ]; then
  # link-only stub (SONAME libcuda.so.1); the real library comes from the driver at run time
  mkdir -p "$CUDA_ROOT/lib/stubs"
  _cudarc_src=$(ls -d "$HOME"/.cargo/registry/src/*/cudarc-0.19.*/ 2>/dev/null | tail -1)
  {
    echo '#include <cuda.h>' | gcc -E -I "$CUDA_ROOT/include" -x c - | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d '( '
    [ -n "$_cudarc_src" ] && grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$_cudarc_src/src/driver/sys/mod.rs" | awk '{print $4}'
  } | sort -u | awk '{print "void " $1 "(void) {}"}' > "$CUDA_ROOT/lib/stubs/libcuda_stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CUDA_ROOT/lib/stubs/libcuda.so" "$CUDA_ROOT/lib/stubs/libcuda_stub.c"
fi
export PATH=$CUDA_ROOT/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CUDARC_CUDA_VERSION=13000
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-2}
