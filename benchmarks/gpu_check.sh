#!/usr/bin/env bash
# Everything the GPU targets need, in one command, for a GPU host or a lent device machine:
#   1. the device and library versions,
#   2. the GPU-only tests (no host sync in the batch loop under CUDA's sync debug mode; compiled
#      bf16 + channels_last training without recompiles; the CUDA training defaults of issue 17,
#      CUDA graphs included),
#   3. the benchmark: ResNet18 and WRN-34-10 at batch 128 and 512, ours compiled (the default),
#      eager and with CUDA graphs (reduce-overhead), the strongest plain loop and the reference
#      loop in the same run, the paper's 200-epoch projection (compile time included), all paper
#      attacks,
#   4. AutoAttack and CW at a large evaluation batch (their per-iteration overhead, see
#      docs/benchmarks.md).
# Logs and JSON go to the folder given (default runs/gpu-check-DATE); copy the numbers into
# docs/benchmarks.md with the device and date.
#
# Needs python3 with torch, torchvision, torchattacks, pydantic, safetensors, numpy, pillow,
# scikit-learn and pytest; not the service's packages (the tests run with --noconftest).
# BENCH_ARGS / EVAL_ARGS replace the arguments of steps 3 / 4 (e.g. a short run first); STEPS
# picks steps (default "device gpu-tests bench eval-large-batch"), e.g. to split the work over
# calls of a machine with a per-command time limit.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu-check-$(date +%F)}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
failed=()

steps=" ${STEPS:-device gpu-tests bench eval-large-batch} "

step() {  # step NAME LOG COMMAND...: run (if selected), tee the output to LOG, remember a failure
    local name=$1 log=$2
    shift 2
    [[ $steps == *" $name "* ]] || return 0
    echo "== $name" | tee "$log"
    "$@" 2>&1 | tee -a "$log"
    [ "${PIPESTATUS[0]}" = 0 ] || failed+=("$name")
}

step device "$out/device.txt" "$py" -c \
    "import torch, torchattacks; print(torch.__version__, torch.version.cuda, torchattacks.__version__);
print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'NO CUDA DEVICE')"
[[ $steps == *" device "* ]] && command -v nvidia-smi >/dev/null && nvidia-smi >>"$out/device.txt" 2>&1
step gpu-tests "$out/gpu-tests.txt" "$py" -m pytest --noconftest -p no:cacheprovider -q -m gpu \
    tests/ctrw/training/test_fastpath.py tests/ctrw/training/test_compile.py tests/ctrw/training/test_speedups.py
# shellcheck disable=SC2086  # the overrides are word lists
step bench "$out/bench.txt" "$py" benchmarks/bench.py ${BENCH_ARGS:---compile --cudagraphs} --json "$out/bench.json"
# shellcheck disable=SC2086
step eval-large-batch "$out/eval-large-batch.txt" "$py" benchmarks/bench.py \
    ${EVAL_ARGS:---models resnet18 --batch-sizes 512 --no-reference --eval-batch 2048 --eval-examples 2048 --attacks cw,autoattack} \
    --json "$out/eval-large-batch.json"

if [ ${#failed[@]} -gt 0 ]; then
    echo "gpu_check: FAILED steps: ${failed[*]} (logs in $out)"
    exit 1
fi
echo "gpu_check: all steps ran (logs in $out)"
