#!/usr/bin/env bash
# The GPU check: on a CUDA machine whose jax (CUDA build), flax and optax are installed, from the
# repository root, in under 5 minutes:
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]                 # default OUT_DIR: gpu_check/
#     WHEELS=.whl bash benchmarks/gpu_check.sh [OUT_DIR]     # a host without network: its wheels
#
# It installs only what is missing (never jax, jaxlib, flax or torch: the image's stay), from
# $WHEELS if given (pip --no-index), else from the package index. One Python process at a time
# (no pytest-xdist: every worker would take the same GPU), no preallocation of 75% of the GPU
# per process, JAX_PLATFORMS=cuda so that a silent fallback to the CPU fails instead of passing.
# Then, each timed, one summary table at the end (and everything under OUT_DIR):
#   1. the cuDNN LSTM against the scan (outputs, carries, gradients; masks, reverse), and the
#      device-independent numerics, float32 matmuls at full precision;
#   2. the main job's --quick (gradient_flow: seeds vmapped, so the scan, never cuDNN);
#   3. a task experiment's --quick on cuDNN (sentiment, the LSTM), its flow steps on the scan;
#   4. the fixed-point finder's --quick (its analyses at highest precision: q < 1e-10 reached);
#   5. the train-step throughput table: rnn_jax on the scan and on cuDNN, Flax, PyTorch if present.
set -uo pipefail
out="${1:-gpu_check}"
mkdir -p "$out"
export XLA_PYTHON_CLIENT_PREALLOCATE=false JAX_PLATFORMS=cuda PYTHONUNBUFFERED=1

if ! python -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")' >"$out/device.txt" 2>&1; then
    echo "NO CUDA: jax here cannot use a GPU (JAX_PLATFORMS=cuda failed; install the CUDA build of jax, check nvidia-smi)"
    tail -3 "$out/device.txt"
    exit 2
fi
python -c 'import jax; print("jax", jax.__version__, jax.devices())' | tee "$out/device.txt"

# what the project needs and the image lacks (the held packages are never touched)
missing=$(python - <<'EOF'
import importlib.util, re
held = {"jax", "jaxlib", "flax", "torch"}
modules = {"orbax-checkpoint": "orbax.checkpoint", "scikit-learn": "sklearn", "tensorboardX": "tensorboardX"}
for line in open("requirements.txt"):
    name = re.split(r"[=<>~!\[ ]", line.strip())[0]
    if not name or name.startswith(("#", "-")) or name in held:
        continue
    module = modules.get(name, name.replace("-", "_"))
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        print(name)
EOF
)
if [ -n "$missing" ]; then
    echo "installing what is missing: $missing"
    if [ -n "${WHEELS:-}" ]; then
        python -m pip install -q --no-index --find-links "$WHEELS" $missing || echo "WARNING: some wheels missing"
    else
        python -m pip install -q $missing || echo "WARNING: could not install: $missing"
    fi
fi
python -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

summary="$out/summary.tsv"
printf 'check\tresult\tseconds\tlog\n' >"$summary"
check() {  # check NAME COMMAND...: run it, log it, time it, record the outcome
    local name=$1 log="$out/$1.txt" start=$SECONDS
    shift
    echo "== $name: $*"
    if "$@" >"$log" 2>&1; then result=pass; else result="FAIL ($?)"; fi
    printf '%s\t%s\t%s\t%s\n' "$name" "$result" $((SECONDS - start)) "$log" >>"$summary"
    tail -3 "$log"
}

tests="tests/test_cudnn.py tests/test_cells.py tests/test_recurrence.py tests/test_gradflow.py tests/test_fixed_points.py"
check cudnn-and-numerics env JAX_DEFAULT_MATMUL_PRECISION=highest python -m pytest -q -n 0 -p no:cacheprovider $tests
check main-job-quick python -m experiments.gradient_flow --quick --out "$out/gradient_flow"
check cudnn-task-quick python -m experiments.sentiment --quick --cell lstm --scan cudnn --out "$out/sentiment"
check fixed-points-quick python -m experiments.fixed_points --quick --cells lstm gru --out "$out/fixed_points"
impls=rnn_jax,rnn_jax-cudnn,flax
python -c 'import torch' 2>/dev/null && impls="$impls,torch"
check throughput python -m benchmarks.throughput --cells lstm,gru --seq 128 --hidden 256,1024 --repeats 2 \
    --min-seconds 0.5 --impls "$impls" --out "$out/throughput.json"

echo
echo "== summary ($out/summary.tsv)"
column -t -s $'\t' "$summary" 2>/dev/null || cat "$summary"
python - "$out" <<'EOF' || true
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
fixed = out / "fixed_points" / "fixed_points.json"
if fixed.exists():
    for cell, record in json.loads(fixed.read_text()).get("cells", {}).items():
        q = [p["q"] for p in record.get("points", [])]
        print(f"fixed points, {cell}: {len(q)} points, smallest q {min(q):.2e}" if q else f"fixed points, {cell}: none")
rows = out / "throughput.json"
if rows.exists():
    for row in json.loads(rows.read_text()).get("rows", []):
        print(f"throughput {row.get('impl')} {row.get('cell')} H={row.get('hidden')}: {row.get('tokens_per_s', 0):,.0f} tokens/s")
EOF
! grep -q FAIL "$summary"
