#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs the safetensors header
# fuzzer. FUZZ_SECONDS (default 300) bounds the run; findings land in build-fuzz/findings/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
seconds="${FUZZ_SECONDS:-300}"
build=build-fuzz
instrument="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -g -O1"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_CXX_FLAGS="$instrument" -DQS_CUDA=OFF -DQS_BUILD_TESTS=OFF -DQS_BUILD_FUZZERS=ON >/dev/null
cmake --build "$build" --target fuzz_safetensors_header

corpus="$build/corpus"
mkdir -p "$corpus" "$build/findings"
# Seeds: the bundled small files; the fuzzer mutates from real headers.
cp tests/data/glm5-tiny/tokens.safetensors "$corpus/tokens" 2>/dev/null || true
cp tests/data/glm5-tiny/reference.safetensors "$corpus/reference" 2>/dev/null || true
"$build/fuzz/fuzz_safetensors_header" "$corpus" -max_total_time="$seconds" -max_len=262144 \
  -artifact_prefix="$build/findings/" -print_final_stats=1
