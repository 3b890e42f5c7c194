#!/usr/bin/env bash
# KLD of the NVFP4 scale methods and of GPTQ on the NVFP4 grid, on the bundled model's routed
# experts (ModelOpt experts-only layout): statistics from `calibrate --all-experts` on the 128
# calibration rows, `eval` on the 64 held-out rows against BF16.
#
#   [QS_STATS=FILE] bench/nvfp4_calibrated_quality.sh [path/to/quantsmith] [variant ...]
# A variant is "METHOD" (action nvfp4) or "gptq:METHOD[:damp=D][:act_order=false]".
set -euo pipefail
cd "$(dirname "$0")/.."
quantsmith="$(realpath "${1:-build/tools/quantsmith}")"
shift || true
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(max mse fp8-sweep joint hessian gptq:max gptq:fp8-sweep
  gptq:hessian gptq:max:act_order=false)
model=tests/data/glm5-tiny
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# QS_STATS=FILE reuses statistics made by the same calibrate command.
stats="${QS_STATS:-$out/stats.qsc}"
[ -n "${QS_STATS:-}" ] || "$quantsmith" calibrate "$model" --tokens "$model/tokens.safetensors:calib" \
  --all-experts --out "$stats" > /dev/null
kld() {
  "$quantsmith" eval --ref "$model" --model "$1" --tokens "$model/tokens.safetensors:heldout" \
    --max-rows 64 --decode-steps 0 2> /dev/null | awk '/mean KLD/ {print $3}'
}
printf '%-34s %10s %8s %10s\n' variant "mean KLD" "× max" "seconds"
baseline=""
for variant in "${variants[@]}"; do
  IFS=: read -r -a parts <<< "$variant"
  args=(--device cpu)
  if [ "${parts[0]}" = gptq ]; then
    args+=(--recipe recipes/modelopt-nvfp4-gptq-experts-only.yaml --calib "$stats"
      --param "scale_method=${parts[1]}")
    for extra in "${parts[@]:2}"; do args+=(--param "$extra"); done
  else
    args+=(--recipe recipes/modelopt-nvfp4-experts-only.yaml --scale-method "${parts[0]}")
    [ "${parts[0]}" = hessian ] && args+=(--calib "$stats")
  fi
  start=$(date +%s.%N)
  "$quantsmith" quantize "$model" "$out/model" "${args[@]}" --force > /dev/null
  seconds=$(echo "$(date +%s.%N) - $start" | bc)
  value=$(kld "$out/model")
  [ -n "$baseline" ] || baseline=$value
  printf '%-34s %10s %8.3f %10.2f\n' "$variant" "$value" "$(echo "$value / $baseline" | bc -l)" \
    "$seconds"
done
