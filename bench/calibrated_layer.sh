#!/usr/bin/env bash
# Benchmark: the layer-pipelined calibrated quantize job (`quantize --calib-tokens`) on one
# real-size GLM-5 MoE layer (synth --preset glm5-moe-layer: 256 experts of 2048 × 6144, 22 GiB),
# per stage (forward, statistics, factorization, sweep, propagation, write): seconds, the
# floating-point work the stage does and its GFLOP/s, beside OpenBLAS on the same shapes in the
# same run (bench/blas_reference.cpp), plus peak RSS (/usr/bin/time -v), peak statistics memory
# and bytes written.
#
#   bench/calibrated_layer.sh [path/to/quantsmith]
#     BENCH_DIR (out/glm5-moe-layer)   the layer; made with synth (+ --tokens) when missing
#     BENCH_PRESET (glm5-moe-layer)    synth preset for it; BENCH_SYNTH_FLAGS adds overrides
#     BENCH_TOKENS (4x128)             the token file synth writes (rows x sequence length)
#     BENCH_ROWS (all)                 --calib-rows: calibrate on the first N rows
#     BENCH_ACTIONS (gptq-int4)        calibrated actions to run, e.g. "gptq-int4 nvfp4-gptq"
#     BENCH_GPTQ_EXPERTS (all)         all, or N: only experts 0..N-1 calibrated, the others
#                                      kept BF16 (the forward still runs every expert); the
#                                      table then says how to scale to all experts
#     BENCH_INPUTS (sequential)        --calib-inputs; BENCH_EXPERT_MODE (all) --calib-experts
#     BENCH_NICE (10)                  nice level of the job and the BLAS reference
#     BENCH_WORK (BENCH_DIR-bench)     recipes, raw outputs (JSON, time -v, BLAS lines), outputs
#     BENCH_KEEP_OUTPUT (0)            1: keep the quantized checkpoints
#     BENCH_TABLE_ONLY (0)             1: print the tables of an earlier run in BENCH_WORK again
#
# Floating-point work counted per stage (T calibration tokens, h hidden, m expert width, E
# experts, k experts per token, Q calibrated experts):
#   forward        2·T·(every Linear of the layer but the routed experts) + 2·T·3hm·k (routed)
#                  + 2·T·3hm·E (all-experts statistics pass); attention scores are left out
#   statistics     T·n² per XᵀX summed (n the module's input width): h² once (all-experts
#                  gate/up) or per expert (routed), m² per expert's down_proj
#   factorization  (2/3)·n³ per Hessian (Cholesky n³/3 + triangular inverse n³/3)
#   sweep          r·c² per matrix [r, c] (GPTQ's updates; the brief's count), and separately
#                  the job's quality report, which the sweep's timer includes: two 2·r·c²
#                  products W·H per matrix (the reference tr(W·H·Wᵀ) once, and round-to-nearest's
#                  error; GPTQ's own objective comes from the sweep, docs/algorithms/gptq.md,
#                  "Report cost")
#   propagation    sequential inputs: the layer again with quantized weights (routed pass)
#   write          bytes written per second
# The counts are those of one MoE layer, what the glm5-moe-layer presets have; a model with more
# layers runs more work than the GFLOP column says (the table prints a note).
# The BLAS reference runs `openblas` (its own threads) and `quantsmith` (the deterministic tiled
# calls the stages make) on: a token batch through an expert matrix (forward), XᵀX of width h
# (statistics), potrf + trtri of widths m and h (factorization, single-threaded as in GPTQ), the
# sweep's lazy update [2m, 128]·[128, h/2] and the objective's [2m, h]·[h, h].
set -euo pipefail
cd "$(dirname "$0")/.."
quantsmith="$(realpath "${1:-build/tools/quantsmith}")"
blas_reference="$(dirname "$quantsmith")/../bench/qs_bench_blas_reference"
dir="${BENCH_DIR:-out/glm5-moe-layer}"
preset="${BENCH_PRESET:-glm5-moe-layer}"
token_shape="${BENCH_TOKENS:-4x128}"
actions="${BENCH_ACTIONS:-gptq-int4}"
gptq_experts="${BENCH_GPTQ_EXPERTS:-all}"
inputs="${BENCH_INPUTS:-sequential}"
expert_mode="${BENCH_EXPERT_MODE:-all}"
niceness="${BENCH_NICE:-10}"
work="${BENCH_WORK:-$dir-bench}"
command -v /usr/bin/time >/dev/null || { echo "bench: needs /usr/bin/time (apt install time)" >&2; exit 2; }
[ -x "$blas_reference" ] || { echo "bench: build qs_bench_blas_reference first" >&2; exit 2; }

if [ ! -f "$dir/config.json" ] || [ ! -f "$dir/tokens.safetensors" ]; then
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  # shellcheck disable=SC2086  # BENCH_SYNTH_FLAGS is a list of flags
  "$quantsmith" synth --preset "$preset" ${BENCH_SYNTH_FLAGS:-} --tokens "$token_shape" --out "$dir"
fi
mkdir -p "$work"
source bench/timing.sh  # gb

rows_flag=()
[ -n "${BENCH_ROWS:-}" ] && rows_flag=(--calib-rows "$BENCH_ROWS")

# The layer's dimensions and calibration tokens, for the BLAS shapes and the flop counts.
read -r hidden width tokens < <(python3 - "$dir" "${BENCH_ROWS:-0}" <<'EOF'
import json, struct, sys
directory, rows_wanted = sys.argv[1], int(sys.argv[2])
config = json.load(open(f"{directory}/config.json"))
with open(f"{directory}/tokens.safetensors", "rb") as f:
    header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
rows, seq = header["calib"]["shape"]
rows = min(rows, rows_wanted) if rows_wanted else rows
print(config["hidden_size"], config["moe_intermediate_size"], rows * seq)
EOF
)

if [ "${BENCH_TABLE_ONLY:-0}" != 1 ]; then
  echo "bench: $dir ($(gb "$(du -cb "$dir"/model*.safetensors | tail -1 | cut -f1)") GB), $tokens calibration tokens," \
    "$(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
  nice -n "$niceness" "$blas_reference" \
    sgemm "$tokens" "$width" "$hidden" dsyrk "$hidden" "$tokens" dsyrk "$width" "$tokens" \
    dpotrf "$width" dtrtri "$width" dpotrf "$hidden" dtrtri "$hidden" \
    sgemm $((2 * width)) $((hidden / 2)) 128 sgemm $((2 * width)) "$hidden" "$hidden" \
    | tee "$work/blas.txt"
fi

# A recipe for one calibrated action on the chosen experts; the others stay BF16 (a layer's
# experts in two different quantized schemes is a layout vLLM refuses).
recipe_for() {
  local action=$1 format selector=""
  case "$action" in
    gptq-*) format=compressed-tensors ;;
    nvfp4-*) format=modelopt ;;
    *) echo "bench: no recipe for action '$action'" >&2; exit 2 ;;
  esac
  if [ "$gptq_experts" != all ]; then
    selector="    module: 're:model\\.layers\\.\\d+\\.mlp\\.experts\\.($(seq -s'|' 0 $((gptq_experts - 1))))\\.'"
  fi
  cat <<EOF
description: bench/calibrated_layer.sh, $action on routed experts ${gptq_experts}
format: $format
rules:
  - name: MTP layer stays BF16
    mtp: true
    action: keep
  - name: calibrated routed experts
    category: routed_expert
${selector:+$selector
}    action: $action
EOF
}

# The stage table for one action: stage seconds from the job's JSON, flops from the layer's
# shapes, reference rates from blas.txt, peak RSS from time -v.
stage_table() {
  python3 - "$dir" "$work" "$1" "$tokens" "$gptq_experts" "$inputs" "$expert_mode" <<'EOF'
import glob, json, re, struct, sys
directory, work, action, tokens, calibrated, inputs, mode = sys.argv[1:]
T = int(tokens)
config = json.load(open(f"{directory}/config.json"))
h, m = config["hidden_size"], config["moe_intermediate_size"]
E, k = config["n_routed_experts"], config["num_experts_per_tok"]
Q = E if calibrated == "all" else int(calibrated)

# Every Linear of the first MoE layer but its routed experts, from the shard headers.
other = 0
for shard in glob.glob(f"{directory}/model*.safetensors"):
    with open(shard, "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    for name, info in header.items():
        layer = re.match(r"model\.layers\.(\d+)\.", name)
        if not layer or len(info.get("shape", [])) != 2 or not name.endswith(".weight"):
            continue
        if int(layer.group(1)) == config.get("first_k_dense_replace", 0) and ".experts." not in name:
            other += info["shape"][0] * info["shape"][1]

routed = 2 * T * k * 3 * h * m
forward = 2 * T * other + routed + (2 * T * E * 3 * h * m if mode == "all" else 0)
if mode == "all":
    statistics = T * h * h + Q * T * m * m
    factor_h, factor_m = 1, Q
else:  # routed: each expert sees about T·k/E tokens and has its own gate/up matrix
    statistics = Q * (T * k / E) * (h * h + m * m)
    factor_h, factor_m = Q, Q
factorization = 2 / 3 * (factor_h * h**3 + factor_m * m**3)
sweep = Q * (2 * m * h * h + h * m * m)
objective = 4 * sweep  # two W·H products of 2·r·c² each
propagation = 2 * T * other + routed if inputs == "sequential" else 0

blas = {}
for line in open(f"{work}/blas.txt"):
    parts = line.split()
    if parts and parts[0] == "blas":
        blas[(parts[1], parts[2], parts[3])] = float(parts[6])
def rate(op, dims, variant):
    value = blas.get((op, dims, variant), 0.0)
    return value if value > 0 else float("nan")  # too short to time, or not run
def reference(variant):
    """Seconds each stage would take at the BLAS rate on its shape (potrf+trtri per width)."""
    def factor_seconds(n):
        return n**3 / 3 / (rate("dpotrf", str(n), variant) * 1e9) + \
               n**3 / 3 / (rate("dtrtri", str(n), variant) * 1e9)
    return {
        "forward": forward / (rate("sgemm", f"{T}x{m}x{h}", variant) * 1e9),
        "statistics": statistics / (rate("dsyrk", f"{h}x{T}", variant) * 1e9),
        "factorization": factor_h * factor_seconds(h) + factor_m * factor_seconds(m),
        "sweep": sweep / (rate("sgemm", f"{2 * m}x{h // 2}x128", variant) * 1e9)
                 + objective / (rate("sgemm", f"{2 * m}x{h}x{h}", variant) * 1e9),
        "propagation": propagation / (rate("sgemm", f"{T}x{m}x{h}", variant) * 1e9),
    }
openblas, tiled = reference("openblas"), reference("quantsmith")

job = json.load(open(f"{work}/{action}.json"))
stages = job["pipeline"]
rss = 0
for line in open(f"{work}/{action}.time"):
    if "Maximum resident set size" in line:
        rss = int(line.split()[-1]) * 1024
    if "Elapsed (wall clock)" in line:
        clock = line.split()[-1].split(":")
        wall = sum(float(x) * 60**i for i, x in enumerate(reversed(clock)))
written = int(open(f"{work}/{action}.bytes").read())
flops = {"forward": forward, "statistics": statistics, "factorization": factorization,
         "sweep": sweep + objective, "propagation": propagation}
if config["num_hidden_layers"] != 1 or config.get("num_nextn_predict_layers", 0):
    print(f"\nnote: {directory} has {config['num_hidden_layers']} layers (+ MTP); the GFLOP "
          "column counts one MoE layer")
print(f"\n{action}: {T} tokens, experts {mode}, inputs {inputs}, {Q} of {E} experts calibrated; "
      f"wall {wall:.1f} s, peak RSS {rss / 2**30:.2f} GiB, peak statistics "
      f"{stages['peak_statistics_bytes'] / 2**30:.2f} GiB, written {written / 1e9:.2f} GB")
print("| stage | seconds | GFLOP | GFLOP/s | OpenBLAS-rate seconds | tiled-rate seconds | "
      "stage / tiled |")
print("|---|---:|---:|---:|---:|---:|---:|")
for stage in ["forward", "statistics", "factorization", "sweep", "propagation"]:
    seconds = stages[f"{stage}_s"]
    if stage == "propagation" and seconds == 0:
        # Sequential mode re-runs a layer only to feed the next one: never the last layer.
        print("| propagation | 0 | (last layer: none) | | | | |")
        continue
    work_done = flops[stage] / 1e9
    speed = work_done / seconds if seconds > 0 else float("nan")
    ratio = tiled[stage] / seconds if seconds > 0 else float("nan")
    print(f"| {stage} | {seconds:.1f} | {work_done:.0f} | {speed:.1f} | {openblas[stage]:.1f} | "
          f"{tiled[stage]:.1f} | {ratio:.2f} |")
print(f"| write | {stages['write_s']:.1f} | {written / 1e9:.2f} GB | "
      f"{written / 1e9 / max(stages['write_s'], 1e-9):.2f} GB/s | | | |")
print(f"(sweep GFLOP: {sweep / 1e9:.0f} of r·c² updates + {objective / 1e9:.0f} of objective "
      f"products, which the sweep's timer includes)")
if Q < E:
    scale = E / Q
    per_expert = {s: stages[f"{s}_s"] for s in ["factorization", "sweep"]}
    whole = stages["forward_s"] + stages["statistics_s"] + stages["propagation_s"] + \
        scale * (per_expert["sweep"] + per_expert["factorization"])
    print(f"all {E} experts calibrated, scaling factorization and sweep by {scale:g} "
          f"(the forward already ran every expert): about {whole:.0f} s of stage time")
EOF
}

for action in $actions; do
  if [ "${BENCH_TABLE_ONLY:-0}" = 1 ]; then stage_table "$action"; continue; fi
  recipe="$work/$action.yaml"
  out="$work/$action-out"
  recipe_for "$action" >"$recipe"
  echo "bench: $action, experts calibrated: $gptq_experts, inputs $inputs, experts $expert_mode"
  /usr/bin/time -v -o "$work/$action.time" nice -n "$niceness" "$quantsmith" quantize "$dir" "$out" \
    --recipe "$recipe" --calib-tokens "$dir/tokens.safetensors:calib" "${rows_flag[@]}" \
    --calib-inputs "$inputs" --calib-experts "$expert_mode" --device cpu --force --json \
    >"$work/$action.json" 2>"$work/$action.log" ||
    { echo "bench: $action failed:" >&2; tail -5 "$work/$action.log" >&2; exit 1; }
  du -sb "$out" | cut -f1 >"$work/$action.bytes"
  [ "${BENCH_KEEP_OUTPUT:-0}" = 1 ] || rm -rf "$out"
  stage_table "$action"
done
