#!/usr/bin/env bash
# The VQ quality study (docs/performance/vq-quality.md) on the bundled model: all-experts
# statistics of the first CALIB_ROWS calibration rows (as bench/calib_inputs_kld.sh, 64 by
# default), then qs_bench_vq_quality over EVAL_ROWS held-out rows (64).
#
# Usage: bench/vq_quality.sh [BUILD_DIR] [CALIB_ROWS] [EVAL_ROWS] [-- qs_bench_vq_quality flags]
# Prints the markdown table; JSON lands in $VQ_QUALITY_JSON when set.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
calib_rows=${2:-64}
eval_rows=${3:-64}
shift $(( $# < 3 ? $# : 3 ))
[ "${1:-}" = "--" ] && shift
model=$root/tests/data/glm5-tiny
tokens=$model/tokens.safetensors
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$build/tools/quantsmith" calibrate "$model" --tokens "$tokens:calib" --max-rows "$calib_rows" \
  --all-experts --out "$work/stats.qs" >&2
json_flag=()
[ -n "${VQ_QUALITY_JSON:-}" ] && json_flag=(--json "$VQ_QUALITY_JSON")
"$build/bench/qs_bench_vq_quality" "$model" "$work/stats.qs" "$tokens:heldout" --rows "$eval_rows" \
  "${json_flag[@]}" "$@"
