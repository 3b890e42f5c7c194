# Timing helpers shared by the end-to-end benchmarks (sourced, not run).
#   gb BYTES          bytes as decimal GB with two digits
#   best_of CMD...    the best wall seconds of $runs runs of CMD (its stdout discarded)

gb() { python3 -c "print(f'{$1/1e9:.2f}')"; }

best_of() {
  local best=""
  for _ in $(seq "$runs"); do
    local start end
    start=$(date +%s.%N); "$@" >/dev/null; end=$(date +%s.%N)
    best=$(python3 -c "import sys; a=float(sys.argv[1])-float(sys.argv[2]); b=sys.argv[3]; print(a if b=='' or a<float(b) else b)" "$end" "$start" "$best")
  done
  echo "$best"
}
