#!/usr/bin/env bash
# Checks our output against the real Python consumers: NVFP4 (compressed-tensors' own
# decompression, and the layout rules vLLM applies to modelopt checkpoints) and pack-quantized
# INT8 / INT4 (compressed-tensors' PackedQuantizationCompressor against the format semantics).
#
#   scripts/conformance.sh [path/to/quantsmith]
#
# Creates (once) a venv in .venv-conformance with torch, compressed-tensors, safetensors and
# numpy from PyPI; quantizes the bundled model to NVFP4 in both layouts with two recipes and
# runs scripts/conformance/check_nvfp4_consumers.py on each; then to INT8 / INT4 with the
# --scheme presets and the seed 000 / 002 recipes (RTN and GPTQ) and runs
# scripts/conformance/check_pack_quantized_consumers.py on each, ending with a summary table;
# converts the DeepSeek FP8 fixture to BF16 and the BF16 one to FP8 and checks both against an
# independent numpy decode / encode (scripts/conformance/check_fp8_{decode,encode}.py); decodes
# VQ outputs with numpy from docs/formats/vq.md (scripts/conformance/check_vq_decode.py); then loads every seed output with vLLM itself
# (scripts/conformance/vllm_load.sh).
# Exit 0 when everything conforms.
set -euo pipefail
cd "$(dirname "$0")/.."
quantsmith="$(realpath "${1:-build/tools/quantsmith}")"
venv=.venv-conformance
source scripts/conformance/venv.sh

if [ ! -x "$venv/bin/python" ]; then
  echo "conformance: creating $venv (CPU torch, compressed-tensors, safetensors)" >&2
  create_venv "$venv"
  # PyPI's torch brings the CUDA libraries (~5.6 GB, ~75 s here); where the CPU-only index is
  # reachable, CONFORMANCE_TORCH_INDEX=https://download.pytorch.org/whl/cpu is much smaller.
  if [ -n "${CONFORMANCE_TORCH_INDEX:-}" ]; then
    "$venv/bin/pip" install -q --index-url "$CONFORMANCE_TORCH_INDEX" torch
  fi
  "$venv/bin/pip" install -q compressed-tensors safetensors numpy
fi

out=out/conformance
rm -rf "$out"
mkdir -p "$out"
model=tests/data/glm5-tiny
status=0
for recipe in glm5-nvfp4-seed001 modelopt-nvfp4-default; do
  for format in compressed-tensors modelopt; do
    target="$out/$recipe-$format"
    parameters=()
    [ "$recipe" = glm5-nvfp4-seed001 ] && parameters=(--param boundary_layers=1)
    "$quantsmith" quantize "$model" "$target" --recipe "recipes/$recipe.yaml" \
      "${parameters[@]}" --format "$format" >/dev/null
    echo "== $recipe ($format)"
    "$venv/bin/python" scripts/conformance/check_nvfp4_consumers.py "$target" --source "$model" ||
      status=1
  done
done
# pack-quantized integers: the --scheme presets (round-to-nearest, min-max observer), the seed
# recipes' integer layouts, and seed 002 through GPTQ from all-experts calibration statistics.
summary="$out/pack-quantized-summary.jsonl"
"$quantsmith" calibrate "$model" --tokens "$model/tokens.safetensors:calib" --max-rows 32 \
  --all-experts --out "$out/calib-all-experts.qsc" >/dev/null
for scheme in int8 int8-channel int4 int4-g32 seed000 seed002-rtn seed002-gptq; do
  target="$out/$scheme"
  checks=()
  case "$scheme" in
    seed000) arguments=(--recipe recipes/glm5-w8a16-int8mix-seed000.yaml) ;;
    seed002-rtn) arguments=(--recipe recipes/glm5-w4a16-experts-seed002.yaml --param experts=int4) ;;
    seed002-gptq)
      arguments=(--recipe recipes/glm5-w4a16-experts-seed002.yaml --calib "$out/calib-all-experts.qsc")
      checks=(--gptq) ;;
    *) arguments=(--scheme "$scheme") ;;
  esac
  "$quantsmith" quantize "$model" "$target" "${arguments[@]}" >/dev/null
  echo "== $scheme (pack-quantized)"
  "$venv/bin/python" scripts/conformance/check_pack_quantized_consumers.py "$target" \
    --source "$model" --quantsmith "$quantsmith" --label "$scheme" --summary "$summary" \
    "${checks[@]}" || status=1
done
"$venv/bin/python" scripts/conformance/summarize_pack_quantized.py "$summary" || status=1
# FP8 block-scaled sources: DeepSeek's FP8 checkpoint format read and converted to BF16 must be
# the numpy decode of the definition (e4m3 * scale_inv in f32, rounded to nearest even), bit for bit.
fp8_source=tests/data/deepseek-v3-tiny-fp8
"$quantsmith" quantize "$fp8_source" "$out/fp8-to-bf16" --scheme bf16 >/dev/null
echo "== fp8 -> bf16 ($fp8_source)"
"$venv/bin/python" scripts/conformance/check_fp8_decode.py "$fp8_source" "$out/fp8-to-bf16" ||
  status=1
# ... and written: amax / 448 block scales, E4M3 round-to-nearest-even codes, bit for bit.
bf16_source=tests/data/deepseek-v3-tiny
"$quantsmith" quantize "$bf16_source" "$out/bf16-to-fp8" --scheme fp8-block >/dev/null
echo "== bf16 -> fp8-block ($bf16_source)"
"$venv/bin/python" scripts/conformance/check_fp8_encode.py "$bf16_source" "$out/bf16-to-fp8" ||
  status=1
# Vector quantization: the seed 004 recipe (mixed vq1/vq2/vq3 experts, INT4 spine) and uniform
# scalar 1-bit experts (tier int1), each decoded by an independent numpy decoder written from
# docs/formats/vq.md (scripts/conformance/check_vq_decode.py) and compared with
# `quantsmith dequantize --dtype f32`, bit for bit.
cat > "$out/vq-int1.yaml" <<'YAML'
format: compressed-tensors
rules:
  - {name: experts, category: routed_expert, mtp: false, action: vq, tiers: [int1]}
YAML
for vq in seed004 int1; do
  case "$vq" in
    seed004) recipe=recipes/glm5-vq-seed004.yaml ;;
    int1) recipe="$out/vq-int1.yaml" ;;
  esac
  "$quantsmith" quantize "$model" "$out/vq-$vq" --recipe "$recipe" \
    --calib "$out/calib-all-experts.qsc" >/dev/null
  "$quantsmith" dequantize --dtype f32 "$out/vq-$vq" "$out/vq-$vq-f32" >/dev/null
  echo "== vq ($vq): numpy decoder against quantsmith dequantize"
  "$venv/bin/python" scripts/conformance/check_vq_decode.py "$out/vq-$vq" "$out/vq-$vq-f32" ||
    status=1
done
# vLLM's own model classes and loaders on every seed output and draft/target pair (a separate
# venv, .venv-vllm: `pip install vllm` is a large download; CONFORMANCE_VLLM=0 skips it).
if [ "${CONFORMANCE_VLLM:-1}" != 0 ]; then
  echo "== vLLM loads (scripts/conformance/vllm_load.sh)"
  scripts/conformance/vllm_load.sh "$quantsmith" || status=1
fi
exit $status
