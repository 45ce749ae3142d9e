#!/usr/bin/env bash
# Checks that `--features cuda` compiles, with nvcc from PyPI wheels (no system CUDA needed).
# Linking and running need a GPU machine's driver libraries; this only type-checks and builds
# the kernels. About 7 minutes on 2 cores, mostly nvcc.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/cuda-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet nvidia-cuda-nvcc nvidia-nvvm nvidia-cuda-crt nvidia-cuda-runtime nvidia-cuda-cccl
fi
cuda=$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
[ -d "$cuda" ] || cuda=$(dirname "$(dirname "$(find "$venv" -name nvcc -type f | head -n 1)")")
# cudarc 0.19 knows CUDA up to 13.4; its bindings for 13.4 work with the newer wheels (13.5).
export CUDA_ROOT="$cuda" CUDA_PATH="$cuda" PATH="$cuda/bin:$PATH" CUDA_COMPUTE_CAP=90 CUDARC_CUDA_VERSION=13040
echo "check-cuda: nvcc $(nvcc --version | tail -n 1) from $cuda"
cargo check --release --features cuda --bins
