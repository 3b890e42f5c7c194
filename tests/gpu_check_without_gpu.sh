#!/usr/bin/env bash
# scripts/gpu_check.sh on a machine whose NVIDIA driver does not answer (a stand-in nvidia-smi
# that fails the way a missing driver makes it fail), and on one with no nvidia-smi at all:
# it must say so on stderr, exit 3 within seconds, build nothing, and leave a report that says
# it did not pass. Runs the same on machines with and without a GPU.
set -uo pipefail
root="$1"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/bin"
cat >"$scratch/bin/nvidia-smi" <<'SMI'
#!/bin/sh
echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver." >&2
exit 9
SMI
chmod +x "$scratch/bin/nvidia-smi"
fail() { echo "FAIL: $*" >&2; exit 1; }

check() {  # LABEL PATH EXPECTED_TEXT
  local start=$SECONDS status
  PATH="$2" GPU_CHECK_BUILD="$scratch/build" "$root/scripts/gpu_check.sh" "$scratch/out-$1" \
    >"$scratch/$1.stdout" 2>"$scratch/$1.stderr"
  status=$?
  [ "$status" -eq 3 ] || fail "$1: exit $status, expected 3: $(cat "$scratch/$1.stderr")"
  [ $((SECONDS - start)) -le 10 ] || fail "$1: took $((SECONDS - start)) s"
  grep -q "no GPU on this machine: $3" "$scratch/$1.stderr" || fail "$1: stderr: $(cat "$scratch/$1.stderr")"
  [ ! -e "$scratch/build" ] || fail "$1: it configured a build"
  grep -q '"passed": false' "$scratch/out-$1/report.json" || fail "$1: report: $(cat "$scratch/out-$1/report.json")"
  grep -q "no GPU" "$scratch/out-$1/report.txt" || fail "$1: report.txt"
}
check driver "$scratch/bin:$PATH" "nvidia-smi failed: NVIDIA-SMI has failed"
# No nvidia-smi anywhere on PATH (only what the script itself needs).
mkdir -p "$scratch/plain"
for tool in bash env dirname realpath mkdir rm cat head tr wc timeout nproc; do
  ln -s "$(command -v "$tool")" "$scratch/plain/$tool"
done
check absent "$scratch/plain" "nvidia-smi is not installed"
echo "gpu_check says there is no GPU and exits 3 at once, with a report"
