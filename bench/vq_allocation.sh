#!/usr/bin/env bash
# Benchmark: what the VQ tier allocation buys. The seed 004 recipe (recipes/glm5-vq-seed004.yaml)
# on the bundled GLM-5 model, mixed vq1/vq2/vq3 at several target_bpw against uniform vq2
# (tiers: [vq2]), each quantized with quantsmith quantize and scored with quantsmith eval against
# the BF16 source on held-out rows. Statistics: all-experts calibration (made once per work dir).
# Prints one table: bits per weight, mean KLD ± s.e., same top-1, share of weights per tier.
#
#   bench/vq_allocation.sh [path/to/quantsmith]
#     VA_MODEL (tests/data/glm5-tiny)  the model (tokens.safetensors with calib and heldout)
#     VA_WORK (out/vq-allocation)      work dir (statistics kept between runs)
#     VA_CALIB_ROWS (64)               calibration rows
#     VA_EVAL_ROWS (64)                held-out rows scored
#     VA_TARGETS (1.6 1.9 2.4)         target_bpw of the mixed runs
#     VA_RULE_KEYS ("")                extra keys for the VQ rule, ';'-separated (e.g.
#                                      "allocation_estimate: plain")
#     VA_UNIFORM (1)                   0: skip the uniform vq2 run
#     VA_NICE (10)                     nice level
set -euo pipefail
cd "$(dirname "$0")/.."
quantsmith="$(realpath "${1:-build/tools/quantsmith}")"
model="${VA_MODEL:-tests/data/glm5-tiny}"
work="${VA_WORK:-out/vq-allocation}"
calib_rows="${VA_CALIB_ROWS:-64}"
eval_rows="${VA_EVAL_ROWS:-64}"
targets="${VA_TARGETS:-1.6 1.9 2.4}"
rule_keys="${VA_RULE_KEYS:-}"
niceness="${VA_NICE:-10}"
mkdir -p "$work"
echo "bench: $model, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"

stats="$work/calib-all-experts-$calib_rows.qsc"
if [ ! -f "$stats" ]; then
  nice -n "$niceness" "$quantsmith" calibrate "$model" --tokens "$model/tokens.safetensors:calib" \
    --max-rows "$calib_rows" --all-experts --out "$stats.tmp" >/dev/null
  mv "$stats.tmp" "$stats"
fi

# The recipe with the extra rule keys after the VQ rule's `refine:` line (same indentation), and
# with its tiers replaced when $2 is given.
make_recipe() {  # out tiers
  local out="$1" tiers="${2:-}" extra=""
  IFS=';' read -ra keys <<<"$rule_keys"
  for key in "${keys[@]}"; do [ -n "${key// }" ] && extra+="\\n    ${key# }"; done
  sed -e "s/^\(    refine: .*\)$/\1$extra/" recipes/glm5-vq-seed004.yaml >"$out"
  if [ -n "$tiers" ]; then sed -i -e "s/^    tiers: .*$/    tiers: $tiers/" "$out"; fi
}

run() {  # label target tiers
  local label="$1" target="$2" tiers="${3:-}" dir="$work/$1"
  make_recipe "$work/$label.yaml" "$tiers"
  rm -rf "$dir"
  nice -n "$niceness" "$quantsmith" quantize "$model" "$dir" --recipe "$work/$label.yaml" \
    --param target_bpw="$target" --calib "$stats" >"$work/$label.quantize.log" 2>&1 ||
    { echo "$label: quantize failed (see $work/$label.quantize.log)"; return; }
  nice -n "$niceness" "$quantsmith" eval --ref "$model" --model "$dir" \
    --tokens "$model/tokens.safetensors:heldout" --max-rows "$eval_rows" --decode-steps 0 \
    >"$work/$label.eval.log" 2>&1 || { echo "$label: eval failed"; return; }
  local bpw kld top tiers_line
  bpw=$(grep -oE 'at [0-9.]+ bits per weight' "$work/$label.quantize.log" | awk '{print $2}')
  tiers_line=$(grep -oE 'weights by tier: .*' "$work/$label.quantize.log" | sed 's/weights by tier: //')
  kld=$(awk '/^mean KLD/ {print $3, $4, $5}' "$work/$label.eval.log")
  top=$(awk '/^same top token/ {print $4, $5, $6}' "$work/$label.eval.log")
  printf '| %-10s | %6s | %-20s | %-18s | %s |\n' "$label" "$bpw" "$kld" "$top" "$tiers_line"
}

echo "rule keys: ${rule_keys:-(recipe as is)}; calibration $calib_rows rows all-experts; eval $eval_rows held-out rows"
printf '| %-10s | %6s | %-20s | %-18s | %s |\n' run bpw "mean KLD" "same top-1" "weights by tier"
echo "|---|---|---|---|---|"
for target in $targets; do run "mixed-$target" "$target"; done
if [ "${VA_UNIFORM:-1}" != 0 ]; then run uniform-vq2 2.125 "[vq2]"; fi
