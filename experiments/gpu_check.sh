#!/usr/bin/env bash
# One GPU session's checks, prepared so that a short lease runs them once: the tests that
# behave differently on a GPU, the train rows the README's performance section lacks
# (medium, large, char x lstm/gru/rnn_tanh, float32 and bfloat16 through "fast"; the LSTM
# through "cudnn"), each against PyTorch's cuDNN in the same process, and the quickstart
# trained with "fast" and "cudnn". Its time limits add up to under 9 minutes (170 s tests,
# 250 s bench, 100 s training), so one run fits a 15-minute lease with time to rerun a part;
# a failing step does not stop the next, and tests.log names each test as it ends.
#
#     bash experiments/gpu_check.sh OUT_DIR
#
# rnnjax runs from the checkout (PYTHONPATH), not installed. On a machine without some of its
# dependencies and no pip index, put the missing pure-Python packages in ./.gpu_site (ignored by
# git) and the script puts it on the path. For this workplace's device machine (JAX, Flax, Optax,
# Orbax and PyTorch there; ml_collections not), here:
#     mkdir -p .gpu_site && cp -r .venv/lib/python3.*/site-packages/ml_collections .gpu_site/
# then one device `run` of `bash experiments/gpu_check.sh $OUT` with carry [".gpu_site"] and
# timeout_s 590.
# What comes back in OUT_DIR: env.txt, tests.log, train.log, bench.log, bench_gpu.json and
# bench_gpu.md (the table to commit as experiments/results/bench_gpu.md with its header).
# GPU_CHECK_SHAPES (default medium,large,char) and GPU_CHECK_REPEATS (default 3) shrink it
# for a dry run on a CPU: GPU_CHECK_SHAPES=tiny bash experiments/gpu_check.sh /tmp/gpu_out
set -uo pipefail
out=${1:?usage: bash experiments/gpu_check.sh OUT_DIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD:$PWD/.gpu_site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# JAX and PyTorch share the GPU in the bench's process: no preallocation of 75% of it by JAX
export XLA_PYTHON_CLIENT_PREALLOCATE=false
shapes=${GPU_CHECK_SHAPES:-medium,large,char}
repeats=${GPU_CHECK_REPEATS:-3}
py=${PYTHON:-python3}
t0=$SECONDS
stage() { echo "== $1 ($((SECONDS - t0)) s in)"; }

stage env | tee "$out/env.txt"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  $py -c "import jax, jaxlib, sys; print(sys.version.split()[0], 'jax', jax.__version__, 'jaxlib', jaxlib.__version__, jax.devices())"
  $py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
  git log -1 --format='rnnjax at %h %s' 2>/dev/null
  git diff --quiet HEAD 2>/dev/null || echo "(the working tree differs from that commit)"
} >>"$out/env.txt" 2>&1
cat "$out/env.txt"

# test_cudnn runs the real kernel against "fast"; test_linear_scan the associative form
# (the accelerator path); test_precision the bfloat16 matmuls; test_fast_paths every cell's
# fast path against the reference.
stage tests
timeout 170 $py -m pytest -v -p no:cacheprovider tests/test_cudnn.py tests/test_linear_scan.py \
  tests/test_precision.py tests/test_fast_paths.py tests/test_min_cells.py >"$out/tests.log" 2>&1
echo "pytest exit $?" | tee -a "$out/tests.log"
grep -E "FAILED|ERROR|passed|failed" "$out/tests.log" | tail -15

# train rows, each interleaved with PyTorch's cuDNN module in the same process
stage bench
bench() { timeout "$1" $py experiments/bench.py --repeats "$repeats" --mode train "${@:2}" >>"$out/bench.log" 2>&1
          echo "exit $?" >>"$out/bench.log"; }
bench 190 --shapes "$shapes" --cells lstm,gru,rnn_tanh --dtype float32,bfloat16 --json "$out/bench_fast.json"
bench 60 --shapes "$shapes" --cells lstm --impl cudnn --json "$out/bench_cudnn.json"
grep -E "exit|rror" "$out/bench.log"
$py - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
parts = [out / "bench_fast.json", out / "bench_cudnn.json"]
rows = [r for f in parts if f.is_file() for r in json.loads(f.read_text())]
(out / "bench_gpu.json").write_text(json.dumps(rows, indent=1))
for f in parts:
    f.unlink(missing_ok=True)
PY
$py experiments/bench.py --render "$out/bench_gpu.json" >"$out/bench_gpu.md" && cat "$out/bench_gpu.md"

# end to end: the README's first command, then the same model through cuDNN (its valid ppl should match)
stage train
for impl in fast cudnn; do
  echo "-- model.impl=$impl" >>"$out/train.log"
  timeout 50 $py -m rnnjax train --workdir "$(mktemp -d)/quickstart-$impl" \
    --config.model.impl=$impl >>"$out/train.log" 2>&1
  echo "exit $?" >>"$out/train.log"
done
grep -E "^-- |valid ppl [0-9.]+,|exit|error" "$out/train.log"
stage done
