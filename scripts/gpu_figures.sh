#!/usr/bin/env bash
# The figures a CUDA machine adds to docs/benchmarks.md (issue 16, item 7), in one prepared run:
#   bench: scripts/benchmark.py --size default --device cuda (ms per 512x512 slice with fp32, AMP and
#          TorchScript; seconds per volume; training steps per second), written to OUT/benchmarks_gpu.md
#   demo:  the default-size demo with one self-training round over every slice (--series_rounds 1),
#          its results page as OUT/results_gpu.md and its per-step times in OUT/demo_steps.log
# Usage: bash scripts/gpu_figures.sh OUT [bench|demo|all]   (PYTHON=... to pick the interpreter)
# Scratch data goes to ${GPU_SCRATCH:-/tmp/gpu_figures}; nothing in the checkout is written.
set -uo pipefail
out=${1:?usage: gpu_figures.sh OUT [bench|demo|all]}
part=${2:-all}
[[ $part =~ ^(bench|demo|all)$ ]] || { echo "error: part must be bench, demo or all, not '$part'" >&2; exit 2; }
py=${PYTHON:-python3}
scratch=${GPU_SCRATCH:-/tmp/gpu_figures}
cd "$(dirname "$0")/.." || exit 1
mkdir -p "$out" "$scratch"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$out/gpu.txt" 2>&1
$py -c "import torch, monai; print('torch', torch.__version__, 'monai', monai.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$out/gpu.txt"
rc=0
if [[ $part != demo ]]; then
  start=$SECONDS
  $py scripts/benchmark.py --size default --device cuda --sections volume,training --repeats 3 --iters 20 \
    --work "$scratch/bench" --out "$out/benchmarks_gpu.md" >"$out/bench.log" 2>&1 || rc=1
  echo "benchmark: $((SECONDS - start)) s, exit $rc" | tee -a "$out/gpu.txt"
fi
if [[ $part != bench ]]; then
  start=$SECONDS
  $py scripts/demo.py --series_rounds 1 --work "$scratch/demo/runs" --data "$scratch/demo/data" \
    --model_dir "$scratch/demo/models" --results "$out/results_gpu.md" >"$out/demo.log" 2>&1 || rc=1
  echo "demo with a self-training round: $((SECONDS - start)) s, exit $rc" | tee -a "$out/gpu.txt"
  cp "$scratch/demo/runs/demo.log" "$out/demo_steps.log" 2>/dev/null
fi
exit $rc
