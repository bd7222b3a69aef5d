#!/bin/bash
# experiments/debug_copy_d6.gin on one GPU within a fixed wall-clock budget: pretrain, SFT, the SFT model's
# agentic + tool-call evals, then GRPO on locate tasks from the SFT model and its agentic eval. The tokenizer and the
# agentic SFT data are built on the CPU beforehand and carried in $NANOCODE_BASE_DIR (a GPU machine has no network);
# the pretraining shards are rebuilt there, because the embedded corpus is the running Python's standard library:
#   NANOCODE_BASE_DIR=.scratch/gpuws; for c in data tok-train "synth tasks"; do nanocode $c --gin_file G; done
# then, on the GPU machine (device tool: carry .whl and .scratch/gpuws):
#   BUDGET=420 bash benchmarks/gpu_copy_d6.sh [extra --gin_param bindings...]
# Each stage gets what is left of BUDGET seconds; the logs, metrics and eval results (no checkpoints) are copied to
# ${OUT:-/tmp/gpu_copy_d6} after every stage. Results: benchmarks/sft_conditioning_results.md.
set -u
cd "$(dirname "$0")/.."
python3 -c "import gin" 2>/dev/null || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export NANOCODE_BASE_DIR="${NANOCODE_BASE_DIR:-$PWD/.scratch/gpuws}" NANOCODE_ALLOW_UNISOLATED=1
OUT="${OUT:-/tmp/gpu_copy_d6}"; mkdir -p "$OUT"
ATTENTION="${ATTENTION:-cudnn}"
deadline=$(( $(date +%s) + ${BUDGET:-420} ))
G=(--gin_file experiments/debug_copy_d6.gin --gin_param "GPTConfig.attention='$ATTENTION'")
for p in "$@"; do G+=(--gin_param "$p"); done
TAG="$NANOCODE_BASE_DIR/debug_copy_d6"

stage() {  # stage NAME SECONDS nanocode-args...: run with the smaller of SECONDS and what is left, then save results
    local name=$1 want=$2; shift 2
    local left=$(( deadline - $(date +%s) )); [ "$want" -lt "$left" ] && left=$want
    if [ "$left" -lt 20 ]; then echo "== $name: skipped, ${left}s left"; return 1; fi
    echo "== $name: up to ${left}s, $(date -u +%T)"
    local t0=$(date +%s)
    timeout --kill-after=5 "$left" python3 -m nanocode.cli.main "$@" "${G[@]}" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "== $name: rc $rc in $(( $(date +%s) - t0 ))s"; tail -n 4 "$OUT/$name.log"
    [[ $name == eval* && -f $TAG/eval/results.json ]] && cp "$TAG/eval/results.json" "$OUT/$name.results.json"
    tar czf "$OUT/workspace.tgz" -C "$NANOCODE_BASE_DIR" --exclude=checkpoints --exclude='*.parquet' debug_copy_d6 2>/dev/null
    return $rc
}

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
stage data 60 data || exit 1
# Training stages resume, so a rerun on the same machine continues where a budget stopped the last one.
stage pretrain 200 pretrain --resume --quiet || exit 1
stage sft 120 sft --resume --quiet || exit 1
stage eval_sft 100 eval --stage sft --suite agentic --suite tool_calls --quiet
stage rl 90 rl --resume --quiet --gin_param "RLTraining.init_from='sft'" --gin_param "rl/repo_tasks.kinds=['locate']" || exit 1
stage eval_rl 100 eval --stage rl --suite agentic --quiet
