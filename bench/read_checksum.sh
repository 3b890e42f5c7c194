#!/usr/bin/env bash
# Benchmark: read + checksum a >= 4 GB synthetic checkpoint with `validate --checksum`, beside
# `cat files > /dev/null` on the same files in the same run. Reports GB/s, the ratio, and the
# peak RSS of `inspect` and `validate --checksum`.
#
#   bench/read_checksum.sh [path/to/quantsmith]     (BENCH_DIR, BENCH_PRESET, BENCH_RUNS)
#
# Two cache states: "warm" (files in the page cache, measures our CPU cost against cat's) and
# "evicted" (pages dropped with posix_fadvise(DONTNEED) before each run, which measures the
# storage; it is best effort: the kernel may keep some pages).
set -euo pipefail
cd "$(dirname "$0")/.."
quantsmith="$(realpath "${1:-build/tools/quantsmith}")"
dir="${BENCH_DIR:-out/bench-4g}"
preset="${BENCH_PRESET:-bench-4g}"
runs="${BENCH_RUNS:-3}"
command -v /usr/bin/time >/dev/null || { echo "bench: needs /usr/bin/time (apt install time)" >&2; exit 2; }

if [ ! -f "$dir/config.json" ]; then
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  "$quantsmith" synth --preset "$preset" --out "$dir"
fi
files=("$dir"/*.safetensors)
bytes=$(cat "${files[@]}" | wc -c)

evict() {
  python3 - "$@" <<'PY'
import os, sys
for path in sys.argv[1:]:
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
PY
}

# Best (shortest) wall time of `runs` runs of a command, in seconds.
best_seconds() {
  local state="$1"; shift
  local best=""
  for _ in $(seq "$runs"); do
    [ "$state" = evicted ] && evict "${files[@]}"
    local start end
    start=$(date +%s.%N)
    "$@" >/dev/null
    end=$(date +%s.%N)
    best=$(python3 -c "import sys; a=float(sys.argv[1])-float(sys.argv[2]); b=sys.argv[3]; print(a if b=='' or a<float(b) else b)" "$end" "$start" "$best")
  done
  echo "$best"
}

echo "bench: $(printf '%s\n' "${files[@]}" | wc -l) files, $(python3 -c "print(f'{$bytes/1e9:.2f}')") GB, best of $runs, $(nproc) cores"
printf '%-8s %-28s %10s %10s\n' state command seconds GB/s
for state in warm evicted; do
  cat "${files[@]}" >/dev/null  # warm the cache (and make the evicted runs comparable)
  t_cat=$(best_seconds "$state" cat "${files[@]}")
  t_qs=$(best_seconds "$state" "$quantsmith" validate --checksum "$dir")
  for row in "cat:$t_cat" "validate --checksum:$t_qs"; do
    name="${row%%:*}"; t="${row##*:}"
    printf '%-8s %-28s %10.3f %10.2f\n' "$state" "$name" "$t" "$(python3 -c "print($bytes/1e9/$t)")"
  done
  printf '%-8s ratio (quantsmith GB/s / cat GB/s) = %.3f\n' "$state" "$(python3 -c "print($t_cat/$t_qs)")"
done

rss() { /usr/bin/time -f '%M' "$@" 2>&1 >/dev/null | tail -1; }
echo "peak RSS inspect:            $(rss "$quantsmith" inspect "$dir") KiB"
echo "peak RSS validate --checksum: $(rss "$quantsmith" validate --checksum "$dir") KiB"
