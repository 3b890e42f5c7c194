#!/usr/bin/env bash
# Compares the NVFP4 scale selection methods on the bundled model's routed experts (the
# ModelOpt experts-only layout): mean per-tensor weight SNR and wall time of each method.
#
#   bench/scale_methods.sh [path/to/quantsmith]
set -euo pipefail
cd "$(dirname "$0")/.."
quantsmith="$(realpath "${1:-build/tools/quantsmith}")"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
printf '%-10s %14s %14s %10s\n' method "mean SNR (dB)" "min SNR (dB)" seconds
for method in max mse fp8-sweep joint; do
  "$quantsmith" quantize tests/data/glm5-tiny "$out/$method" \
    --recipe recipes/modelopt-nvfp4-experts-only.yaml --scale-method "$method" --device cpu \
    --json > "$out/$method.json"
  python3 - "$out/$method.json" "$method" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
snr = [row["snr_db"] for row in report["quality"]]
print(f'{sys.argv[2]:<10} {sum(snr)/len(snr):14.3f} {min(snr):14.3f} {report["run"]["seconds"]:10.2f}')
PY
done
