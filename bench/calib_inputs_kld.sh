#!/usr/bin/env bash
# KLD of the layer-pipelined GPTQ job's two calibration-input modes on the bundled model:
# sequential (layer L+1 calibrated on the quantized layers' outputs) against original (the BF16
# model's activations, the two-step flow's bytes), for INT4 (the seed 002 recipe) and INT3 /
# INT2 GPTQ of the routed experts (asymmetric, group 128), all-experts statistics.
#
# Usage: [BITS="4 3 2"] bench/calib_inputs_kld.sh [BUILD_DIR] [CALIB_ROWS] [EVAL_ROWS]
#        (defaults: build 64 64)
# Prints one table row per scheme and mode: mean KLD, top-1 agreement, PPL ratio, job seconds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
calib_rows=${2:-64}
eval_rows=${3:-64}
quantsmith=$build/tools/quantsmith
model=$root/tests/data/glm5-tiny
tokens=$model/tokens.safetensors
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

recipe_for_bits() {  # GPTQ of the routed experts at $1 bits, asymmetric g128; MTP stays BF16
  cat >"$work/gptq-int$1.yaml" <<YAML
format: compressed-tensors
min_snr_db: 0  # INT2 keeps < 1 dB of some experts' weights; the KLD is what we measure
rules:
  - name: MTP layer stays BF16
    mtp: true
    action: keep
  - name: routed experts
    category: routed_expert
    action: gptq-int4
    bits: $1
    symmetric: false
    group_size: 128
YAML
  echo "$work/gptq-int$1.yaml"
}

printf "| scheme | calib inputs | mean KLD | top-1 agree | PPL ratio | job s |\n"
printf "|---|---|---|---|---|---|\n"
for bits in ${BITS:-4 3 2}; do
  if [ "$bits" = 4 ]; then recipe=$root/recipes/glm5-w4a16-experts-seed002.yaml; else recipe=$(recipe_for_bits "$bits"); fi
  for inputs in original sequential; do
    out=$work/int$bits-$inputs
    start=$(date +%s.%N)
    "$quantsmith" quantize "$model" "$out" --recipe "$recipe" --calib-tokens "$tokens:calib" \
      --calib-rows "$calib_rows" --calib-inputs "$inputs" >/dev/null 2>&1
    end=$(date +%s.%N)
    "$quantsmith" eval --ref "$model" --model "$out" --tokens "$tokens:heldout" \
      --max-rows "$eval_rows" --decode-steps 0 --json >"$work/eval.json" 2>/dev/null
    python3 - "$work/eval.json" "$bits" "$inputs" "$start" "$end" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
kld, top1, ppl = d["kld"], d["top1_agreement"]["mean"], d["ppl"]["ratio"]
print(f"| INT{sys.argv[2]} GPTQ | {sys.argv[3]} | {kld['mean']:.5f} ± {kld['error']:.5f} "
      f"| {top1:.4f} | {ppl:.4f} | {float(sys.argv[5]) - float(sys.argv[4]):.1f} |")
PY
  done
done
