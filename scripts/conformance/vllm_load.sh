#!/usr/bin/env bash
# Loads our outputs with vLLM's own model classes and weight loaders, on the CPU, and counts
# what vLLM rejects or leaves unfilled (scripts/conformance/check_vllm_load.py): every seed
# recipe's output (seed 000 splice, seed 002 inject, seed 003 draft), the quantize presets,
# and MTP drafts paired with their serving targets, as `--speculative-config '{"method":
# "mtp", "model": DRAFT}'` pairs them (the draft built with the target's quantization config).
#
#   scripts/conformance/vllm_load.sh [path/to/quantsmith]
#
# Creates (once) .venv-vllm with `pip install vllm` (a large download: torch with CUDA
# libraries). vLLM's CUDA build needs libcuda.so.1 to import; without an NVIDIA driver the CUDA
# toolkit's stub library is used (found under /usr/local/cuda*/; override with
# VLLM_LIBCUDA_STUB=/path/to/libcuda.so). Writes out/conformance-vllm/summary.jsonl and prints
# a table. Exit 0 when every load matches its expectation.
set -euo pipefail
cd "$(dirname "$0")/../.."
quantsmith="$(realpath "${1:-build/tools/quantsmith}")"
venv=.venv-vllm
source scripts/conformance/venv.sh

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import vllm" 2>/dev/null; then
  echo "vllm conformance: creating $venv (pip install vllm)" >&2
  create_venv "$venv"
  "$venv/bin/pip" install -q vllm
fi

if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
  stub="${VLLM_LIBCUDA_STUB:-}"
  if [ -z "$stub" ]; then
    stub="$(ls /usr/local/cuda*/lib*/stubs/libcuda.so /usr/local/cuda*/targets/*/lib/stubs/libcuda.so \
      2>/dev/null | head -1 || true)"
  fi
  if [ -z "$stub" ] || [ ! -e "$stub" ]; then
    echo "vllm conformance: no NVIDIA driver and no libcuda.so stub (install the CUDA toolkit or" \
      "set VLLM_LIBCUDA_STUB); vLLM's CUDA build cannot be imported" >&2
    exit 2
  fi
  mkdir -p "$venv/cuda-stub"
  ln -sf "$(realpath "$stub")" "$venv/cuda-stub/libcuda.so.1"
  export LD_LIBRARY_PATH="$PWD/$venv/cuda-stub${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

out=out/conformance-vllm
rm -rf "$out"
mkdir -p "$out"
model=tests/data/glm5-tiny
q() { "$quantsmith" "$@" >/dev/null; }

# The seed recipes, end to end.
for seed in batch-seed000-hybrid batch-seed002-mtp batch-seed003-mtp-int4-draft; do
  q recipe run "recipes/$seed.yaml" --param "model=$model" --param "work=$out/$seed"
done
seed000="$out/batch-seed000-hybrid"
seed002="$out/batch-seed002-mtp"
seed003="$out/batch-seed003-mtp-int4-draft"
# The quantize presets and seed 001's NVFP4 layout in both formats.
q quantize "$model" "$out/seed001-modelopt" --recipe recipes/glm5-nvfp4-seed001.yaml \
  --param boundary_layers=1
q quantize "$model" "$out/seed001-compressed-tensors" --recipe recipes/glm5-nvfp4-seed001.yaml \
  --param boundary_layers=1 --format compressed-tensors
for scheme in int8 int8-channel int4 int4-g32; do
  q quantize "$model" "$out/$scheme" --scheme "$scheme"
done
# Drafts for other targets: BF16, seed 003's NVFP4 source, seed 000's hybrid; and the draft
# `--requant int4-g32` made before --target existed, which only the INT4-g32 target loads.
q mtp extract "$seed003/nvfp4" "$out/draft-for-bf16" --target "$model"
q mtp extract "$seed003/nvfp4" "$out/draft-for-nvfp4" --target "$seed003/nvfp4"
q mtp extract "$seed003/nvfp4" "$out/draft-for-seed000" --target "$seed000/hybrid"
q mtp extract "$seed003/nvfp4" "$out/draft-requant-int4-g32" --requant int4-g32

summary="$out/summary.jsonl"
status=0
# check LABEL EXPECT MODEL [check_vllm_load.py options]; EXPECT: loads (0 rejected, 0
# unfilled), rejects (some tensors rejected: the mismatch validate --target reports), fails
# (vLLM cannot build it: an engine quirk).
check() {
  local label="$1" expect="$2" target="$3"
  shift 3
  local result rc=0
  result="$("$venv/bin/python" scripts/conformance/check_vllm_load.py "$target" "$@" --json \
    --label "$label" 2>"$out/$label.log")" || rc=$?
  local got=loads
  [ $rc -eq 1 ] && got=rejects
  [ $rc -eq 2 ] && got=fails
  if [ $rc -le 1 ]; then
    echo "$result" | "$venv/bin/python" -c '
import json, sys
r = json.load(sys.stdin)
print(json.dumps({"label": r["label"], "expect": sys.argv[1], "got": sys.argv[2],
  "class": r["class"], "quantization": r["quantization"], "vllm": r["vllm"],
  "tensors": r["tensors"], "rejected": len(r["rejected"]), "unfilled": len(r["unfilled"]),
  "defaulted": len(r["defaulted"]),
  "first_problem": (r["rejected"][0]["error"] if r["rejected"] else
                    (r["unfilled"][0] if r["unfilled"] else ""))}))' "$expect" "$got" >>"$summary"
  else
    "$venv/bin/python" -c '
import json, sys
lines = [l for l in open(sys.argv[3]).read().splitlines() if l.strip()]
print(json.dumps({"label": sys.argv[1], "expect": sys.argv[2], "got": "fails",
  "first_problem": lines[-1] if lines else ""}))' "$label" "$expect" "$out/$label.log" >>"$summary"
  fi
  if [ "$got" != "$expect" ]; then
    echo "vllm conformance: $label: expected it to $expect, it ${got}" >&2
    status=1
  fi
}

check bf16 loads "$model"
check bf16+own-mtp loads "$model" --draft "$model"
check seed000-hybrid loads "$seed000/hybrid"
# The hybrid's MTP block has channel-wise INT8 routed experts: on Hopper (capability 9.0)
# vLLM's WNA16 MoE kernel asserts group strategy (the engine quirk validate warns about);
# --moe-backend marlin, the workaround, builds and loads it.
check seed000-hybrid+own-mtp fails "$seed000/hybrid" --draft "$seed000/hybrid"
check seed000-hybrid+own-mtp-marlin loads "$seed000/hybrid" --draft "$seed000/hybrid" \
  --moe-backend marlin
check seed002-w4a16-mtp loads "$seed002/w4a16-mtp"
check seed002-w4a16-mtp+own-mtp loads "$seed002/w4a16-mtp" --draft "$seed002/w4a16-mtp"
check seed003-nvfp4-source loads "$seed003/nvfp4"
check seed003-int4-g32-target loads "$seed003/target"
check seed003-draft+int4-g32-target loads "$seed003/target" --draft "$seed003/draft"
check seed003-bf16-with-draft loads "$seed003/bf16-with-draft"
check seed001-modelopt loads "$out/seed001-modelopt"
check seed001-compressed-tensors loads "$out/seed001-compressed-tensors"
for scheme in int8 int4 int4-g32; do
  check "$scheme" loads "$out/$scheme"
done
# Channel-wise INT8 routed experts: the same engine quirk as seed 000's MTP block.
check int8-channel fails "$out/int8-channel"
check int8-channel-marlin loads "$out/int8-channel" --moe-backend marlin
check draft-for-bf16+bf16 loads "$model" --draft "$out/draft-for-bf16"
check draft-for-nvfp4+nvfp4 loads "$seed003/nvfp4" --draft "$out/draft-for-nvfp4"
check draft-for-seed000+seed000-marlin loads "$seed000/hybrid" --draft "$out/draft-for-seed000" \
  --moe-backend marlin
check draft-requant-int4-g32+bf16 rejects "$model" --draft "$out/draft-requant-int4-g32"
check draft-requant-int4-g32+nvfp4 rejects "$seed003/nvfp4" --draft "$out/draft-requant-int4-g32"
check draft-requant-int4-g32+int4-g32 loads "$seed003/target" --draft "$out/draft-requant-int4-g32"

"$venv/bin/python" - "$summary" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"{'output':<40} {'expect':<8} {'got':<8} {'class':<24} {'quantization':<18} "
      f"{'tensors':>7} {'rejected':>8} {'unfilled':>8}")
for r in rows:
    print(f"{r['label']:<40} {r['expect']:<8} {r['got']:<8} {r.get('class', '-'):<24} "
          f"{str(r.get('quantization') or 'none'):<18} {r.get('tensors', '-'):>7} "
          f"{r.get('rejected', '-'):>8} {r.get('unfilled', '-'):>8}")
    if r["got"] != "loads" and r.get("first_problem"):
        print(f"    {r['first_problem'][:150]}")
versions = {r["vllm"] for r in rows if "vllm" in r}
print(f"vLLM {', '.join(sorted(versions))}: "
      f"{sum(r['got'] == r['expect'] for r in rows)} of {len(rows)} as expected")
EOF
exit $status
