#!/usr/bin/env bash
# Installs the Debian packages quantsmith builds against, and python3-numpy for the one test
# that decodes our VQ checkpoints with an independent numpy decoder
# (scripts/conformance/check_vq_decode.py). Idempotent and quiet: packages already present are
# not reinstalled, and apt runs only when something is missing.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  nlohmann-json3-dev libcli11-dev libtbb-dev libzstd-dev libgtest-dev
  libyaml-cpp-dev libfmt-dev libopenblas-dev libxxhash-dev libre2-dev time python3-numpy
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  sudo_cmd=(sudo)
fi

echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Quiet on success; on failure the full apt log is shown.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { "${sudo_cmd[@]}" apt-get update -qq && \
       "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "setup: apt-get failed" >&2
  exit 1
fi
