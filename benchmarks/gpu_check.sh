#!/usr/bin/env bash
# The GPU check: on a CUDA machine (with `pip install -r requirements.txt` and the CUDA build
# of JAX, `pip install "jax[cuda12]==<the pinned version>"`, plus `pip install torch` for the
# comparison), run from the repository root:
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]        # default OUT_DIR: gpu_check/
#
# 1. the device-independent tests (NumPy references, gradients, fused backward = autodiff,
#    masks, remat, the loop's resume/NaN handling) on the GPU, float32 matmuls at full
#    precision (GPUs default to TF32 for float32 matmuls, which misses the 1e-5 tolerances);
# 2. the train-step throughput table against PyTorch's cuDNN modules and Flax's nn.RNN;
# 3. vmapped seeds against sequential runs (where a GPU should gain: one seed's step leaves it idle).
# Everything printed is also saved under OUT_DIR.
set -euo pipefail
out="${1:-gpu_check}"
mkdir -p "$out"

python - <<'EOF' | tee "$out/device.txt"
import jax
devices = jax.devices()
print("jax", jax.__version__, "devices:", devices)
if devices[0].platform != "gpu":
    raise SystemExit("no GPU visible to JAX: install the CUDA build of jax (see README) and check nvidia-smi")
EOF

JAX_DEFAULT_MATMUL_PRECISION=highest python -m pytest -q -p no:cacheprovider \
    tests/test_cells.py tests/test_recurrence.py tests/test_layers.py tests/test_gradflow.py \
    tests/test_seq2seq.py tests/test_train_loop.py 2>&1 | tee "$out/tests.txt"

python -m benchmarks.throughput --seq 128,512 --hidden 256,512,1024 --impls rnn_jax,rnn_jax-autodiff,flax,torch \
    --out "$out/throughput.json" 2>&1 | tee "$out/throughput.txt"

python -m benchmarks.seeds --hidden 128,256 --out "$out/seeds.json" 2>&1 | tee "$out/seeds.txt"
