#!/usr/bin/env bash
# The demo `make demo` runs: what quantsmith can do today, on the bundled tiny GLM-5 model.
set -euo pipefail
cd "$(dirname "$0")/.."
quantsmith="${1:-build/tools/quantsmith}"
model=tests/data/glm5-tiny
out=out/demo

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "inspect: what is in the bundled model (headers only)"
"$quantsmith" inspect "$model"

step "validate --checksum: structure, shapes against config.json, NaN/Inf, per-file hashes"
"$quantsmith" validate --checksum "$model"

step "synth: a fresh GLM-5-shaped checkpoint with the same architecture, then validate it"
rm -rf "$out"
mkdir -p "$(dirname "$out")"
"$quantsmith" synth --preset tiny --out "$out/synth-tiny"
"$quantsmith" validate "$out/synth-tiny"

step "quantize --dry-run: the plan for seed 001's layout (routed experts NVFP4) on the tiny model"
recipe=recipes/glm5-nvfp4-seed001.yaml
"$quantsmith" quantize "$model" "$out/tiny-nvfp4" --recipe "$recipe" --param boundary_layers=1 \
  --dry-run | tail -n 6

step "quantize: stream it to NVFP4 (modelopt layout), then validate the result"
"$quantsmith" quantize "$model" "$out/tiny-nvfp4" --recipe "$recipe" --param boundary_layers=1
"$quantsmith" validate "$out/tiny-nvfp4" --ref "$model"

step "quantize: the same weights in the compressed-tensors layout (nvfp4-pack-quantized)"
"$quantsmith" quantize "$model" "$out/tiny-nvfp4-ct" --recipe "$recipe" --param boundary_layers=1 \
  --format compressed-tensors
"$quantsmith" validate "$out/tiny-nvfp4-ct"

step "eval: the NVFP4 model against its BF16 source on held-out tokens (KLD, top-1, PPL, MTP)"
"$quantsmith" eval --ref "$model" --model "$out/tiny-nvfp4" \
  --tokens "$model/tokens.safetensors:heldout" --max-rows 16

step "calibrate: Hessians (XᵀX) for GPTQ, every token through every expert (seed 002's setting)"
"$quantsmith" calibrate "$model" --tokens "$model/tokens.safetensors:calib" --max-rows 32 \
  --all-experts --out "$out/calib-all-experts.qsc"

step "quantize: seed 002 (routed experts W4A16 GPTQ, INT4 asym g128; the rest and MTP BF16)"
recipe=recipes/glm5-w4a16-experts-seed002.yaml
"$quantsmith" quantize "$model" "$out/tiny-w4a16-gptq" --recipe "$recipe" \
  --calib "$out/calib-all-experts.qsc"
"$quantsmith" quantize "$model" "$out/tiny-w4a16-rtn" --recipe "$recipe" --param experts=int4
"$quantsmith" validate "$out/tiny-w4a16-gptq"

step "quantize --calib-tokens: calibrate and GPTQ in one command, one layer's statistics at a time"
# --calib-inputs original: the BF16 model's activations, so the bytes of the two steps above.
"$quantsmith" quantize "$model" "$out/tiny-w4a16-gptq-one" --recipe "$recipe" \
  --calib-tokens "$model/tokens.safetensors:calib" --calib-rows 32 --calib-inputs original
if diff -r -x quantsmith-job.json "$out/tiny-w4a16-gptq" "$out/tiny-w4a16-gptq-one" >/dev/null; then
  echo "same files as calibrate + quantize --calib"
else
  echo "differs from calibrate + quantize --calib" >&2
  exit 1
fi
# The default, sequential: each layer calibrated on the outputs of the quantized layers before it.
"$quantsmith" quantize "$model" "$out/tiny-w4a16-gptq-seq" --recipe "$recipe" \
  --calib-tokens "$model/tokens.safetensors:calib" --calib-rows 32 | tail -n 1

step "eval: GPTQ (original and sequential inputs) against round-to-nearest (held-out tokens)"
for variant in gptq gptq-seq rtn; do
  printf '%s: ' "$variant"
  "$quantsmith" eval --ref "$model" --model "$out/tiny-w4a16-$variant" \
    --tokens "$model/tokens.safetensors:heldout" --max-rows 16 --decode-steps 0 | grep 'mean KLD'
done

step "quantize: seed 004 — routed experts as mixed 1/2/3-bit VQ (shared codebooks, GPTQ-VQ), spine INT4"
# The tiers are allocated per expert projection for 1.9 bits per weight (scales included) from
# the all-experts statistics above; codebooks and tiers are fixed before any expert is encoded.
"$quantsmith" quantize "$model" "$out/tiny-vq" --recipe recipes/glm5-vq-seed004.yaml \
  --param target_bpw=1.9 --calib "$out/calib-all-experts.qsc" 2>/dev/null |
  grep -E '^(vq|  layer|quantized)'
"$quantsmith" validate "$out/tiny-vq" --ref "$model" | grep -E "^  vq:|^result"
"$quantsmith" eval --ref "$model" --model "$out/tiny-vq" \
  --tokens "$model/tokens.safetensors:heldout" --max-rows 16 --decode-steps 0 | grep 'mean KLD'

step "splice: seed 000 — W8A16 attention/dense/shared/MTP from one checkpoint, NVFP4 routed experts from another"
"$quantsmith" quantize "$model" "$out/tiny-w8a16" --recipe recipes/glm5-w8a16-int8mix-seed000.yaml
"$quantsmith" quantize "$model" "$out/tiny-nvfp4-experts" --recipe recipes/glm5-nvfp4-seed001.yaml \
  --param boundary_layers=0
"$quantsmith" splice "$out/tiny-seed000" --base "$out/tiny-w8a16" \
  --take "$out/tiny-nvfp4-experts:category=routed_expert;layers=1-3"
"$quantsmith" validate "$out/tiny-seed000" --ref "$model"
"$quantsmith" eval --ref "$model" --model "$out/tiny-seed000" \
  --tokens "$model/tokens.safetensors:heldout" --max-rows 16 --decode-steps 0 | grep -E 'KLD|MTP'

step "mtp inject: seed 002 — the BF16 MTP layer put back into a quantized checkpoint, listed as ignored"
"$quantsmith" mtp inject "$out/tiny-w8a16" "$model" "$out/tiny-w8a16-bf16-mtp"
"$quantsmith" validate "$out/tiny-w8a16-bf16-mtp" --ref "$model"

step "mtp extract: seed 003 — the NVFP4 MTP layer as a standalone draft in its INT4-g32 target's schemes"
"$quantsmith" quantize "$model" "$out/tiny-nvfp4-all" --recipe recipes/glm5-nvfp4-all-with-mtp.yaml
# vLLM builds a standalone draft with the target's quantization config, so the draft takes the
# scheme the target gives each module (here INT4 asymmetric group 32, the card's AWQ layout).
"$quantsmith" quantize "$model" "$out/tiny-int4-g32-target" \
  --recipe recipes/glm5-int4-g32-target-seed003.yaml
"$quantsmith" mtp extract "$out/tiny-nvfp4-all" "$out/tiny-mtp-int4-g32" \
  --target "$out/tiny-int4-g32-target"
"$quantsmith" validate "$out/tiny-mtp-int4-g32" --target "$out/tiny-int4-g32-target"
"$quantsmith" mtp inject "$model" "$out/tiny-mtp-int4-g32" "$out/tiny-bf16-int4-draft"
"$quantsmith" eval --ref "$model" --model "$out/tiny-bf16-int4-draft" \
  --tokens "$model/tokens.safetensors:heldout" --max-rows 16 --decode-steps 0 | grep MTP

step "recipe run: seed 000 as one batch recipe (quantize both sides, splice, validate, eval)"
"$quantsmith" recipe run recipes/batch-seed000-hybrid.yaml --param model="$model" \
  --param work="$out/batch-seed000" 2>&1 | grep -E '^\[|mean KLD|result:'

step "FP8 sources: a DeepSeek-style FP8 block-scaled checkpoint to NVFP4 in one command"
# DeepSeek-V3 / Kimi-K2 ship FP8 weights with one F32 scale per 128×128 block; the bundled
# DeepSeek-V3 fixture (tests/data/deepseek-v3-tiny-fp8) is such a checkpoint. Its weights are
# random (made with transformers for the runner's reference logits), so its KLD is far above a
# trained model's: the step shows the one-command path, not quality.
fp8=tests/data/deepseek-v3-tiny-fp8
tokens="$fp8/tokens.safetensors:heldout"
"$quantsmith" inspect "$fp8" | grep '^quantization'
"$quantsmith" quantize "$fp8" "$out/fp8-nvfp4" --scheme nvfp4
"$quantsmith" validate "$out/fp8-nvfp4"
"$quantsmith" eval --ref "$fp8" --model "$out/fp8-nvfp4" --tokens "$tokens" --max-rows 16 \
  --decode-steps 0 | grep -E 'KLD|same top'
