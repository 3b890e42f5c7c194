#!/usr/bin/env bash
# Benchmark: the seed 004 VQ job (recipes/glm5-vq-seed004.yaml: routed experts mixed vq1/vq2/vq3
# at target_bpw, spine INT4 GPTQ) on one real-size GLM-5 MoE layer with a few experts
# (synth --preset glm5-moe-layer --experts N: every matrix at GLM-5 size, 2048 × 6144 experts).
# Prints wall time, peak RSS (/usr/bin/time -v), bytes written and GB/s, and the job's own
# report: the VQ preparation (codebook fitting, tier estimates), the tier histogram and bits per
# weight, and the factorization / sweep seconds. Per-expert costs scale to 256 experts.
#
#   bench/vq_layer.sh [path/to/quantsmith]
#     BENCH_DIR (out/glm5-moe-layer-vq)  the layer; made with synth when missing
#     BENCH_EXPERTS (8)                  routed experts of the synthetic layer
#     BENCH_TOKENS (4x128)               calibration tokens synth writes (rows x sequence length)
#     BENCH_TARGET_BPW (1.9)             the recipe's target_bpw
#     BENCH_SPINE (gptq-int4)            the recipe's spine parameter: keep measures the routed
#                                        experts' VQ alone (the stage times are summed over
#                                        every calibrated transform, the spine's GPTQ included)
#     BENCH_NICE (10)                    nice level of calibrate and quantize
set -euo pipefail
cd "$(dirname "$0")/.."
quantsmith="$(realpath "${1:-build/tools/quantsmith}")"
dir="${BENCH_DIR:-out/glm5-moe-layer-vq}"
experts="${BENCH_EXPERTS:-8}"
tokens="${BENCH_TOKENS:-4x128}"
target="${BENCH_TARGET_BPW:-1.9}"
spine="${BENCH_SPINE:-gptq-int4}"
niceness="${BENCH_NICE:-10}"
work="$dir-bench"
command -v /usr/bin/time >/dev/null || { echo "bench: needs /usr/bin/time (apt install time)" >&2; exit 2; }
source bench/timing.sh  # gb

if [ ! -f "$dir/config.json" ] || [ ! -f "$dir/tokens.safetensors" ]; then
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  "$quantsmith" synth --preset glm5-moe-layer --experts "$experts" --tokens "$tokens" --out "$dir"
fi
mkdir -p "$work"
echo "bench: $dir ($(gb "$(du -cb "$dir"/model*.safetensors | tail -1 | cut -f1)") GB, $experts experts)," \
  "$(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"

stats="$work/calib-all-experts.qsc"
if [ ! -f "$stats" ]; then
  nice -n "$niceness" /usr/bin/time -v -o "$work/calibrate.time" "$quantsmith" calibrate "$dir" \
    --tokens "$dir/tokens.safetensors:calib" --all-experts --out "$stats" >/dev/null
  echo "calibrate: $(grep -E 'Elapsed' "$work/calibrate.time" | awk '{print $NF}') wall," \
    "peak RSS $(grep 'Maximum resident' "$work/calibrate.time" | awk '{printf "%.2f GiB", $NF/1048576}')"
fi

rm -rf "$work/vq"
echo "quantize: recipes/glm5-vq-seed004.yaml, target_bpw $target, spine $spine"
begin=$(date +%s.%N)
nice -n "$niceness" /usr/bin/time -v -o "$work/quantize.time" "$quantsmith" quantize "$dir" "$work/vq" \
  --recipe recipes/glm5-vq-seed004.yaml --param target_bpw="$target" --param spine="$spine" --calib "$stats" --json \
  >"$work/quantize.json"
end=$(date +%s.%N)
written=$(du -cb "$work"/vq/*.safetensors | tail -1 | cut -f1)
python3 - "$work/quantize.json" "$work/quantize.time" "$begin" "$end" "$written" "$experts" <<'PY'
import json, re, sys
report_path, time_path, begin, end, written, experts = sys.argv[1:]
wall = float(end) - float(begin)
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(time_path).read()).group(1))
report = json.load(open(report_path))
print(f"quantize: {wall:.1f} s wall, peak RSS {rss / 1048576:.2f} GiB, {int(written) / 1e9:.2f} GB written "
      f"({int(written) / 1e9 / wall:.3f} GB/s over the whole job)")
def show(key, value, depth=0):
    if isinstance(value, dict):
        print("  " * depth + f"{key}:")
        for k, v in value.items(): show(k, v, depth + 1)
    elif not isinstance(value, list):
        print("  " * depth + f"{key}: {value}")
for key in ("vq", "stages", "stage_seconds"):
    if key in report: show(key, report[key])
PY
