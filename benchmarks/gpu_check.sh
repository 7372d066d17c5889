#!/usr/bin/env bash
# The GPU check, on a CUDA machine whose jax (CUDA build) and flax are already installed, from
# the repository root:
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]        # default OUT_DIR: gpu_check/
#
# It never changes the installed jax, jaxlib or flax (a pinned older flax does not import
# against a newer jax): it installs the project's other requirements with those versions held
# (a pip constraints file), and torch for the comparison if it is missing. Then:
# 1. the device-independent tests (NumPy references, gradients, fused backward = autodiff,
#    masks, remat, the loop's resume/NaN handling) and the cuDNN LSTM against the scan, on the
#    GPU, float32 matmuls at full precision (GPUs default to TF32 for float32 matmuls, which
#    misses the 1e-5 tolerances);
# 2. the train-step throughput table against PyTorch's cuDNN modules and Flax's nn.RNN, with
#    rnn_jax's LSTM both on the scan and on cuDNN (rnn_jax-cudnn);
# 3. vmapped seeds against sequential runs (where a GPU should gain: one seed's step leaves it idle).
# Everything printed is also saved under OUT_DIR.
set -euo pipefail
out="${1:-gpu_check}"
mkdir -p "$out"

# hold the image's jax / jaxlib / flax (and its CUDA plugins) at their installed versions
python -m pip freeze | grep -iE '^(jax|jaxlib|flax|jax-cuda[0-9a-z_-]*)==' > "$out/held-versions.txt"
grep -viE '^(jax|jaxlib|flax)([=<>~! \[]|$)' requirements.txt > "$out/other-requirements.txt"
python -m pip install -q -r "$out/other-requirements.txt" -c "$out/held-versions.txt" || {
    echo "the pinned requirements do not fit the held jax/flax: installing their newest compatible versions"
    sed -E 's/[=<>~!].*$//' "$out/other-requirements.txt" > "$out/unpinned-requirements.txt"
    python -m pip install -q -r "$out/unpinned-requirements.txt" -c "$out/held-versions.txt"
}
python -c "import torch" 2>/dev/null || python -m pip install -q torch -c "$out/held-versions.txt"
python -m pip install -q --no-deps -e .

python - <<'EOF' | tee "$out/device.txt"
import jax
devices = jax.devices()
print("jax", jax.__version__, "devices:", devices)
if devices[0].platform != "gpu":
    raise SystemExit("no GPU visible to JAX: install the CUDA build of jax (see README) and check nvidia-smi")
EOF

JAX_DEFAULT_MATMUL_PRECISION=highest python -m pytest -q -p no:cacheprovider \
    tests/test_cells.py tests/test_recurrence.py tests/test_layers.py tests/test_gradflow.py \
    tests/test_seq2seq.py tests/test_train_loop.py tests/test_cudnn.py 2>&1 | tee "$out/tests.txt" ||
    echo "SOME TESTS FAILED on the GPU (see $out/tests.txt); the benchmarks run anyway"

python -m benchmarks.throughput --seq 128,512 --hidden 256,512,1024 --impls rnn_jax,rnn_jax-cudnn,flax,torch \
    --out "$out/throughput.json" 2>&1 | tee "$out/throughput.txt"

python -m benchmarks.seeds --hidden 128,256 --out "$out/seeds.json" 2>&1 | tee "$out/seeds.txt"
