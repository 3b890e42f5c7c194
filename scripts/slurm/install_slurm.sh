#!/usr/bin/env bash
# Installs Debian's Slurm (slurm-wlm: slurmctld, slurmd, the client commands) and munge, what
# local_cluster.sh and `make slurm-test` need. Idempotent and quiet: apt runs only when a
# package is missing. The packages' own services are not started (local_cluster.sh starts its
# own daemons with configs in a temporary directory).
set -euo pipefail

packages=(slurm-wlm munge)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  sudo_cmd=(sudo)
fi

echo "install_slurm: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Try without refreshing the package lists first: on a machine that has them (CI images
# usually do) this saves the update.
if ! "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" \
  >"$log" 2>&1; then
  if ! { "${sudo_cmd[@]}" apt-get update -qq &&
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
    >"$log" 2>&1; then
    cat "$log" >&2
    echo "install_slurm: apt-get failed" >&2
    exit 1
  fi
fi
