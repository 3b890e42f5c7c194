#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for FUZZ_SECONDS
# (default 300): the safetensors header parser, the config.json reader and the recipe
# readers. FUZZ_TARGETS (default: all three, space-separated) picks some. Findings land in
# build-fuzz/findings/TARGET/; the script fails if any target found something.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
seconds="${FUZZ_SECONDS:-300}"
targets="${FUZZ_TARGETS:-fuzz_safetensors_header fuzz_config_json fuzz_recipe}"
build=build-fuzz
instrument="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -g -O1"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_CXX_FLAGS="$instrument" -DQS_CUDA=OFF -DQS_BUILD_TESTS=OFF -DQS_BUILD_FUZZERS=ON >/dev/null
# shellcheck disable=SC2086
cmake --build "$build" --target $targets

# Seeds: real inputs of each kind; the fuzzer mutates from them.
seed() {
  local target=$1
  shift
  local corpus="$build/corpus/$target"
  mkdir -p "$corpus"
  for file in "$@"; do
    [ -f "$file" ] && cp "$file" "$corpus/$(basename "$file")"
  done
  return 0
}
seed fuzz_safetensors_header tests/data/glm5-tiny/tokens.safetensors \
  tests/data/glm5-tiny/reference.safetensors
seed fuzz_config_json tests/data/glm5-tiny/config.json tests/data/glm5-tiny/generation_config.json \
  tests/data/glm5-tiny/model.safetensors.index.json
seed fuzz_recipe recipes/*.yaml

status=0
for target in $targets; do
  findings="$build/findings/$target"
  mkdir -p "$findings"
  echo "fuzz: $target for ${seconds}s" >&2
  # -timeout: an input that takes this long is a finding (a hang), not a slow case.
  "$build/fuzz/$target" "$build/corpus/$target" -max_total_time="$seconds" -max_len=262144 \
    -timeout=10 -rss_limit_mb=4096 -artifact_prefix="$findings/" -print_final_stats=1 ||
    status=1
done
exit $status
