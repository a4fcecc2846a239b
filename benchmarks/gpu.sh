#!/usr/bin/env bash
# One GPU session's measurements, everything under one folder (issue #12); about 5-8 minutes on one GPU.
#
#   bash benchmarks/gpu.sh [--device cuda|cpu] [--out DIR] [--dry-run] [--smoke]
#
#   1. python -m benchmarks.run --quick          LoRun-9 vs Block-9: ratios and absolute times
#   2. python -m benchmarks.compile              torch.compile (inductor) vs eager, LoRun-9 eval + train step
#   3. lorun train ... --precision bf16          one training run of the demo's size under bf16 autocast
#
# DIR (default runs/gpu-<UTC time>) receives each step's log, its JSON/PNG results and the trained
# model. --dry-run prints the commands and checks that every option they use exists (each tool's
# --help), running nothing. --smoke runs steps 2 and 3 at toy sizes (a CPU check of the pipeline;
# step 1 has no smaller mode than --quick and is skipped). Run from the repository root with the
# project's environment active.
set -euo pipefail

device=cuda
out="runs/gpu-$(date -u +%Y%m%d-%H%M%S)"
dry_run=0
smoke=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --device) device="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        --smoke) smoke=1; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "gpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

results=benchmarks/results
suffix=$([[ "$device" == cuda* ]] && echo _gpu || echo "")
train=(lorun train --task cs --ratio 0.25 --block 16 --width 8 --K 9 --patch 32 --batch-size 8 --lr 2e-3
       --phase paper --steps 200 --precision bf16 --device "$device" --no-progress --out "$out/train_bf16")
compile=(python -m benchmarks.compile --device "$device" --backend inductor --threads 1)
run=(python -m benchmarks.run --quick --device "$device" --threads 1)
if [[ $smoke == 1 ]]; then
    train=(lorun train --task cs --ratio 0.25 --block 16 --width 8 --K 9 --patch 32 --batch-size 2 --lr 2e-3
           --phase paper --steps 3 --precision bf16 --device "$device" --no-progress --out "$out/train_bf16")
    compile=(python -m benchmarks.compile --device "$device" --backend inductor --threads 1 --quick --sizes 64 32 --repeats 2
             --name compile_smoke)
fi

check_options() {  # every --option of the command appears in its --help
    local help
    help=$("$@" --help 2>&1) || { echo "FAILED: $* --help" >&2; return 1; }
    for word in "$@"; do
        if [[ "$word" == --* ]] && ! grep -q -- "$word" <<<"$help"; then
            echo "FAILED: option $word is not in the --help of: $*" >&2
            return 1
        fi
    done
}

step() {  # step NAME COMMAND...: run it, logging to $out/NAME.log, timed
    local name=$1
    shift
    echo "== $name: $*"
    if [[ $dry_run == 1 ]]; then
        check_options "$@"
        return
    fi
    local start=$SECONDS
    "$@" 2>&1 | tee "$out/$name.log"
    echo "== $name took $((SECONDS - start)) s" | tee -a "$out/$name.log"
}

[[ $dry_run == 1 ]] || mkdir -p "$out"
if [[ $smoke == 0 ]]; then
    step run_quick "${run[@]}"
    [[ $dry_run == 1 ]] || cp "$results/run_quick$suffix.json" "$results/run_quick$suffix.png" "$results/run_quick${suffix}_memory.png" "$out/"
fi
step compile "${compile[@]}"
compile_json=$([[ $smoke == 1 ]] && echo compile_smoke || echo "compile_full$suffix")
[[ $dry_run == 1 ]] || cp "$results/$compile_json.json" "$out/"
step train_bf16 "${train[@]}"
if [[ $dry_run == 0 ]]; then
    python -c "import json, sys, torch; json.dump({'torch': torch.__version__, 'cuda': torch.version.cuda,
'gpu': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}, sys.stdout, indent=2)" > "$out/machine.json"
    echo "everything is in $out"
fi
