#!/usr/bin/env bash
# Benchmark: `quantsmith quantize` end to end on a >= 8 GB synthetic GLM-5-shaped checkpoint,
# beside `cat files > /dev/null` on the same files in the same run (warm page cache, so both
# measure CPU cost, not the disk). Reports GB/s of source read, the ratio to cat, and peak RSS.
#
#   bench/quantize_e2e.sh [path/to/quantsmith]
#     BENCH_DIR (out/bench-8g), BENCH_RECIPES (recipe files or "scheme"), BENCH_METHODS (max),
#     BENCH_RUNS (2), BENCH_THREADS (all cores)
set -euo pipefail
cd "$(dirname "$0")/.."
quantsmith="$(realpath "${1:-build/tools/quantsmith}")"
dir="${BENCH_DIR:-out/bench-8g}"
recipes="${BENCH_RECIPES:-recipes/modelopt-nvfp4-experts-only.yaml scheme}"
methods="${BENCH_METHODS:-max}"
runs="${BENCH_RUNS:-2}"
command -v /usr/bin/time >/dev/null || { echo "bench: needs /usr/bin/time (apt install time)" >&2; exit 2; }

if [ ! -f "$dir/config.json" ]; then
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  # bench-4g with 104 experts per layer: 8.9 GB in 1 GB shards.
  "$quantsmith" synth --preset bench-4g --experts 104 --out "$dir"
fi
files=("$dir"/*.safetensors)
bytes=$(cat "${files[@]}" | wc -c)
source bench/timing.sh  # gb, best_of

echo "bench: $(printf '%s\n' "${files[@]}" | wc -l) files, $(gb "$bytes") GB, best of $runs, $(nproc) cores"
cat "${files[@]}" >/dev/null
t_cat=$(best_of cat "${files[@]}")
printf '%-44s %8s %8s %8s %10s\n' command seconds GB/s vs-cat peak-RSS
printf '%-44s %8.2f %8.2f %8s %10s\n' "cat > /dev/null" "$t_cat" "$(python3 -c "print($bytes/1e9/$t_cat)")" 1.00 -
threads=()
[ -n "${BENCH_THREADS:-}" ] && threads=(--threads "$BENCH_THREADS")
for recipe in $recipes; do
  for method in $methods; do
    out="$dir-nvfp4"
    if [ "$recipe" = scheme ]; then selection=(--scheme nvfp4); label="--scheme nvfp4"
    else selection=(--recipe "$recipe"); label="$(basename "$recipe" .yaml)"; fi
    args=(quantize "$dir" "$out" "${selection[@]}" --scale-method "$method" --force --device cpu "${threads[@]}")
    t=$(best_of "$quantsmith" "${args[@]}")
    rss=$( { /usr/bin/time -v "$quantsmith" "${args[@]}" >/dev/null; } 2>&1 | awk '/Maximum resident/ {print $6}')
    printf '%-44s %8.2f %8.2f %8.2f %7d MiB\n' "$label ($method)" "$t" \
      "$(python3 -c "print($bytes/1e9/$t)")" "$(python3 -c "print($t_cat/$t)")" "$((rss / 1024))"
  done
done
rm -rf "$dir-nvfp4"
