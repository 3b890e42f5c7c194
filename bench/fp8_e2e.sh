#!/usr/bin/env bash
# Benchmark: reading FP8 block-scaled checkpoints (DeepSeek-V3's layout), end to end, on a
# >= 4 GB synthetic FP8 checkpoint: FP8 → BF16 (`--scheme bf16`, DeepSeek's fp8_cast_bf16.py
# job) and FP8 → NVFP4 (`--scheme nvfp4`), beside `cat files > /dev/null` on the same files in
# the same run (warm page cache: both measure CPU cost, not the disk). Reports GB/s of source
# read, the ratio to cat, and peak RSS.
#
#   bench/fp8_e2e.sh [path/to/quantsmith]
#     BENCH_DIR (out/bench-fp8), BENCH_RUNS (2), BENCH_THREADS (all cores), BENCH_KEEP (unset:
#     everything the bench wrote is removed at the end)
# The FP8 source is made with `synth` (bench-4g, 104 experts per layer: 8.9 GB BF16) and
# `quantize --scheme fp8-block` (4.5 GB); the BF16 synth is removed once it is converted.
set -euo pipefail
cd "$(dirname "$0")/.."
quantsmith="$(realpath "${1:-build/tools/quantsmith}")"
dir="${BENCH_DIR:-out/bench-fp8}"
runs="${BENCH_RUNS:-2}"
command -v /usr/bin/time >/dev/null || { echo "bench: needs /usr/bin/time (apt install time)" >&2; exit 2; }

source_dir="$dir/fp8"
if [ ! -f "$source_dir/config.json" ]; then
  rm -rf "$dir"
  mkdir -p "$dir"
  "$quantsmith" synth --preset bench-4g --experts 104 --out "$dir/bf16-synth"
  "$quantsmith" quantize "$dir/bf16-synth" "$source_dir" --scheme fp8-block --max-shard-size 1GB
  rm -rf "$dir/bf16-synth"
fi
files=("$source_dir"/*.safetensors)
bytes=$(cat "${files[@]}" | wc -c)
source bench/timing.sh  # gb, best_of

echo "bench: $(printf '%s\n' "${files[@]}" | wc -l) files, $(gb "$bytes") GB FP8, best of $runs, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
cat "${files[@]}" >/dev/null
t_cat=$(best_of cat "${files[@]}")
printf '%-36s %8s %8s %8s %10s\n' command seconds GB/s vs-cat peak-RSS
printf '%-36s %8.2f %8.2f %8s %10s\n' "cat > /dev/null" "$t_cat" "$(python3 -c "print($bytes/1e9/$t_cat)")" 1.00 -
threads=()
[ -n "${BENCH_THREADS:-}" ] && threads=(--threads "$BENCH_THREADS")
for scheme in bf16 nvfp4; do
  out="$dir/out-$scheme"
  args=(quantize "$source_dir" "$out" --scheme "$scheme" --force --device cpu "${threads[@]}")
  t=$(best_of "$quantsmith" "${args[@]}")
  rss=$( { /usr/bin/time -v "$quantsmith" "${args[@]}" >/dev/null; } 2>&1 | awk '/Maximum resident/ {print $6}')
  printf '%-36s %8.2f %8.2f %8.2f %7d MiB\n' "fp8 → $scheme (--scheme $scheme)" "$t" \
    "$(python3 -c "print($bytes/1e9/$t)")" "$(python3 -c "print($t_cat/$t)")" "$((rss / 1024))"
  rm -rf "$out"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -n "${BENCH_KEEP:-}" ] || rm -rf "$dir"
