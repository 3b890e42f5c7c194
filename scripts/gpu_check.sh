#!/usr/bin/env bash
# The one command to run when a machine with a GPU is available: builds with CUDA, runs every
# CUDA test, the GPU benchmarks and a quantize end to end from /dev/shm, and writes one report
# (report.json + report.txt) with the GPU's name and its measured device-to-device copy
# bandwidth beside every figure. Everything within GPU_CHECK_SECONDS (480); each step has its
# own time limit, and a step that fails or runs out of time is reported as such while the
# rest still run.
#
#   scripts/gpu_check.sh [OUT_DIR]          (default out/gpu-check)
#
# Exit 0: every step passed. 1: some step failed (see the report). 3: no GPU here (said on
# stderr within seconds; nothing is built). 4: a GPU but no nvcc, cmake or ninja to build with
# (the build dependencies are those of scripts/setup.sh).
#
# The build directory stays: a second run (after a build that ran out of time on a cold
# machine) continues where the first stopped.
#
# Environment: GPU_CHECK_SECONDS (480), GPU_CHECK_BUILD (build-gpu), GPU_CHECK_JOBS (nproc),
# GPU_CHECK_ARCH (native: only this GPU's architecture, to build faster), GPU_CHECK_SHM
# (/dev/shm/qs-gpu-check), GPU_CHECK_PRESET (bench-4g: the synthetic checkpoint quantized).
set -uo pipefail
cd "$(dirname "$0")/.."
out="$(mkdir -p "${1:-out/gpu-check}" && realpath "${1:-out/gpu-check}")"
total="${GPU_CHECK_SECONDS:-480}"
build="${GPU_CHECK_BUILD:-build-gpu}"
jobs="${GPU_CHECK_JOBS:-$(nproc)}"
arch="${GPU_CHECK_ARCH:-native}"
shm="${GPU_CHECK_SHM:-/dev/shm/qs-gpu-check}"
preset="${GPU_CHECK_PRESET:-bench-4g}"
# The tests that need a GPU have Cuda or Cublas in their names (tests/CMakeLists.txt); the
# multi-device scheduling tests run beside them.
cuda_test_regex='Cuda|Cublas|MultiDevice|ExecutorWorkers|DeviceSelection'

rm -f "$out"/*.json "$out"/*.tsv "$out"/*.txt
mkdir -p "$out/logs"

# ---- Is there a GPU? (before anything slow) ----
no_gpu() {
  echo "gpu_check: no GPU on this machine: $1" >&2
  printf '{\n  "gpu": null,\n  "passed": false,\n  "reason": "%s"\n}\n' \
    "$(echo "$1" | tr -d '"\\' | tr '\t' ' ')" >"$out/report.json"
  echo "quantsmith GPU check: no GPU on this machine: $1" >"$out/report.txt"
  exit 3
}
command -v nvidia-smi >/dev/null || no_gpu "nvidia-smi is not installed (no NVIDIA driver)"
gpus="$(timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1)" ||
  no_gpu "nvidia-smi failed: $(echo "$gpus" | head -1)"
[ -n "$gpus" ] || no_gpu "nvidia-smi lists no GPU"
echo "$gpus" | head -1 >"$out/gpu.txt"
echo "gpu_check: $(echo "$gpus" | wc -l) GPU(s): $gpus"
nvcc="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"
if [ ! -x "$nvcc" ]; then
  echo "gpu_check: a GPU but no nvcc (install the CUDA toolkit) to build with" >&2
  exit 4
fi
missing=""
for tool in cmake ninja c++ timeout; do command -v "$tool" >/dev/null || missing="$missing $tool"; done
if [ -n "$missing" ]; then
  echo "gpu_check: a GPU but no$missing to build with (scripts/setup.sh installs them)" >&2
  exit 4
fi

# ---- Steps: each under its own limit, never past the total ----
start=$SECONDS
# step NAME LIMIT_SECONDS COMMAND...: runs it with its output in logs/NAME.log, and records
# ok / failed / timeout and the seconds taken in steps.tsv. Returns the command's status.
step() {
  local name="$1" limit="$2"
  shift 2
  local left=$((total - (SECONDS - start)))
  if [ "$left" -lt 10 ]; then
    printf '%s\tskipped\t0\tno time left of the %s s\n' "$name" "$total" >>"$out/steps.tsv"
    echo "gpu_check: $name skipped (no time left)"
    return 124
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "gpu_check: $name (at most $limit s)"
  local begin=$SECONDS status
  # bash -c: the command may be one of the functions below (exported).
  timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" >"$out/logs/$name.log" 2>&1
  status=$?
  local took=$((SECONDS - begin)) result=ok note=""
  if [ $status -eq 124 ] || [ $status -eq 137 ]; then
    result=timeout note="stopped after $limit s"
  elif [ $status -ne 0 ]; then
    result=failed note="exit $status: $(grep -v '^\s*$' "$out/logs/$name.log" | tail -1 | tr '\t' ' ' | cut -c1-160)"
  fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$result" "$took" "$note" >>"$out/steps.tsv"
  [ "$result" = ok ] || echo "gpu_check: $name $result ${note}" >&2
  return $status
}

configure() {
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DQS_CUDA=ON \
    -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES="$arch" && return 0
  # An nvcc too old to detect the GPU ("native"): the project's default architectures.
  [ "$arch" = native ] || return 1
  echo "configure: CUDA architecture 'native' refused; trying 90;100"
  rm -f "$build/CMakeCache.txt"
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DQS_CUDA=ON \
    -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES="90;100"
}
build_targets() {
  cmake --build "$build" -j "$jobs" --target quantsmith qs_bench_gpu qs_bench_gptq \
    qs_bench_runner qs_gpu_check_report test_codecs test_fp4_quantizer test_fp8_block \
    test_int_quantizer test_gptq test_runner test_family_runner test_executor \
    test_device_selection test_multidevice_cli test_vq_codebook test_vq_encode qs_bench_vq
}
cuda_tests() {
  (cd "$build" && ctest -R "$cuda_test_regex" --timeout 120 -j 4 --output-on-failure) | tee "$out/tests.log"
  local status=${PIPESTATUS[0]}
  # "12/27 Test #104: Suite.Name/Param  # GetParam() = ... .....***Skipped   0.01 sec"
  sed -nE 's/^ *[0-9]+\/[0-9]+ Test +#[0-9]+: ([^ ]+) .*\.{2,} *[*]*([A-Za-z]+).*/\1\t\2/p' \
    "$out/tests.log" >"$out/tests.tsv"
  [ -s "$out/tests.tsv" ] || { echo "no test matched '$cuda_test_regex'"; return 1; }
  [ "$status" -eq 0 ] || return "$status"
  # On a machine with a GPU a skipped CUDA test means CUDA cannot use it (driver, permissions).
  local skipped
  skipped=$(grep -c $'\tSkipped$' "$out/tests.tsv")
  [ "$skipped" -eq 0 ] || { echo "$skipped CUDA test(s) skipped: CUDA cannot use this GPU"; return 1; }
}
# The quantize step: a synthetic checkpoint in memory (so the disk does not set the pace),
# read once with cat for reference, quantized on the GPU and on the CPU.
synth() {
  rm -rf "$shm" && mkdir -p "$shm"
  local free_gb
  free_gb=$(df -B1G --output=avail "$(dirname "$shm")" | tail -1 | tr -d ' ')
  [ "$free_gb" -ge 8 ] || { echo "/dev/shm has $free_gb GB free, 8 needed"; return 1; }
  "$build/tools/quantsmith" synth --preset "$preset" --out "$shm/source"
}
quantize_on() {  # DEVICE
  "$build/tools/quantsmith" quantize "$shm/source" "$shm/out-$1" --scheme nvfp4 --device "$1" \
    --max-buffer 4GiB --json --force >"$out/quantize_$1.json.part" &&
    mv "$out/quantize_$1.json.part" "$out/quantize_$1.json"
}
read_source() {
  local bytes begin end
  bytes=$(cat "$shm"/source/*.safetensors | wc -c)
  begin=$(date +%s%N)
  cat "$shm"/source/*.safetensors >/dev/null
  end=$(date +%s%N)
  awk -v b="$bytes" -v ns=$((end - begin)) 'BEGIN { printf "%d\t%.6f\n", b, ns / 1e9 }' \
    >"$out/quantize_source.tsv"
}

export out build jobs arch shm preset nvcc cuda_test_regex
export -f configure build_targets cuda_tests synth quantize_on read_source
model=tests/data/glm5-tiny
step configure 90 configure &&
  step build 360 build_targets &&
  {
    step cuda_tests 150 cuda_tests
    step bench_kernels 60 "$build/bench/qs_bench_gpu" 512 --json "$out/kernels.json"
    step bench_gptq 60 "$build/bench/qs_bench_gptq" 2048 6144 4096 cuda --json "$out/gptq.json"
    # VQ encode of one GLM-5 expert projection per tier on the GPU (docs/performance/vq-encode.md)
    step bench_vq 90 "$build/bench/qs_bench_vq" --cuda --tiers vq1,vq2,vq3 --shapes gate,down \
      --json "$out/vq.json"
    step bench_runner_gpu 45 "$build/bench/qs_bench_runner" "$model" 8 --device cuda \
      --json "$out/runner_cuda.json"
    step bench_runner_cpu 45 "$build/bench/qs_bench_runner" "$model" 8 --device cpu \
      --json "$out/runner_cpu.json"
    if step synth 120 synth; then
      step read_source 30 read_source
      step quantize_gpu 90 quantize_on cuda
      rm -rf "$shm/out-cuda"
      step quantize_cpu 90 quantize_on cpu
    fi
    rm -rf "$shm"
  }

if [ -x "$build/bench/qs_gpu_check_report" ]; then
  "$build/bench/qs_gpu_check_report" "$out"
  status=$?
else
  echo "gpu_check: the build failed; see $out/logs/ and $out/steps.tsv" | tee "$out/report.txt" >&2
  cat "$out/steps.tsv" >&2
  status=1
fi
echo "gpu_check: report in $out/report.txt and $out/report.json ($((SECONDS - start)) s)"
exit $status
