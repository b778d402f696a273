#!/usr/bin/env bash
# Compile check of the CUDA sources without a GPU: nvcc -c of the header-only device code
# (csrc/include/pyengine/cuda/*.cuh) through a small translation unit that instantiates every kernel
# (csrc/cuda/tests/device_code_check.cu). No torch headers are needed.
#
#   tools/check_cuda.sh                 device code, for the architectures in CUDA_ARCHS (default 80 90);
#                                       CUDA_CHECK_PTX_ONLY=1 stops at PTX (no ptxas; faster)
#   tools/check_cuda.sh --launchers     also the torch launchers csrc/cuda/*.cu (needs torch's headers; slow)
#
# Exit status: 0 when everything compiles, 1 on a compile error, 2 when nvcc is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NVCC="${NVCC:-nvcc}"
if ! command -v "$NVCC" >/dev/null 2>&1; then
  echo "check_cuda: nvcc not found (install a CUDA toolkit or set NVCC=/path/to/nvcc)" >&2
  exit 2
fi
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
ARCH_FLAGS=()
# CUDA_CHECK_PTX_ONLY=1 stops at PTX (skips ptxas: faster, for the test suite)
CODE="sm"
[[ "${CUDA_CHECK_PTX_ONLY:-0}" == "1" ]] && CODE="compute"
for arch in ${CUDA_ARCHS:-80 90}; do ARCH_FLAGS+=("-gencode=arch=compute_${arch},code=${CODE}_${arch}"); done

echo "check_cuda: $("$NVCC" --version | tail -1)"
"$NVCC" -std=c++17 -O2 "${ARCH_FLAGS[@]}" -Werror all-warnings -I "$ROOT/csrc/include" \
  -c "$ROOT/csrc/cuda/tests/device_code_check.cu" -o "$OUT/device_code_check.o"
echo "check_cuda: device code OK"

if [[ "${1:-}" == "--launchers" ]]; then
  PY="${PYTHON:-$ROOT/.venv/bin/python}"
  TORCH_INC="$("$PY" -c 'import torch.utils.cpp_extension as c; print(" ".join(c.include_paths()))')"
  INC=()
  for dir in $TORCH_INC; do INC+=("-I" "$dir"); done
  # A CPU build of torch lacks one generated CUDA header; an empty one is enough to compile against.
  mkdir -p "$OUT/stub/c10/cuda/impl"
  [[ -n "$(find $TORCH_INC -path '*c10/cuda/impl/cuda_cmake_macros.h' 2>/dev/null | head -1)" ]] ||
    echo "#pragma once" >"$OUT/stub/c10/cuda/impl/cuda_cmake_macros.h"
  ABI="$("$PY" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')"
  for src in "$ROOT"/csrc/cuda/*.cu; do
    "$NVCC" -std=c++20 -O2 "${ARCH_FLAGS[@]}" -I "$ROOT/csrc/include" -I "$OUT/stub" "${INC[@]}" \
      -D_GLIBCXX_USE_CXX11_ABI="$ABI" -DTORCH_EXTENSION_NAME=_C -w -c "$src" -o "$OUT/$(basename "$src").o"
    echo "check_cuda: $(basename "$src") OK"
  done
fi
