#!/usr/bin/env bash
# `make slurm-test`: partitioned jobs on a real Slurm. Installs slurm-wlm and munge when they are
# missing, starts a one-node cluster on localhost (local_cluster.sh, 4 CPU slots), and checks
# that Slurm runs give the bytes a single process gives:
#   1. the bundled model's batch recipes (seeds 000, 001, 002, 003) submitted with
#      `recipe run --submit slurm --partitions 4`: every partitionable step an array of 4 tasks
#      and a finalize job, each step after the previous one; every output directory compared
#      with `recipe run` in one process;
#   2. a quantize as a 4-task array of partition_task.sbatch with finalize.sbatch after it,
#      where one task's quantsmith is killed (SIGKILL) mid-way and requeues itself, and another
#      task is requeued by Slurm (`scontrol requeue`, what a node failure or preemption does)
#      while it runs; the finalized output compared with the single-process one;
#   3. an array numbered other than 0..N-1 refused by every task (exit code 2), not retried.
# Then stops the cluster.
# Usage: slurm_test.sh [path/to/quantsmith] (default build/tools/quantsmith).
# Exit code 0 when everything matched; the work directory is removed unless KEEP=1.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
quantsmith=$(realpath "${1:-$root/build/tools/quantsmith}")
[ -x "$quantsmith" ] || { echo "slurm_test: no quantsmith binary at $quantsmith" >&2; exit 2; }
model=$root/tests/data/glm5-tiny
recipes=$root/recipes
parts=4
timeout_s=${SLURM_TEST_TIMEOUT:-900}

"$root/scripts/slurm/install_slurm.sh"

work=$(mktemp -d "${TMPDIR:-/tmp}/quantsmith-slurm-test.XXXXXX")
cluster=$work/cluster
finish() {
  local code=$?
  "$root/scripts/slurm/local_cluster.sh" stop "$cluster" >/dev/null 2>&1 || true
  if [ "$code" -ne 0 ]; then
    echo "slurm_test: FAILED; logs and outputs kept in $work" >&2
  elif [ "${KEEP:-0}" = 1 ]; then
    echo "slurm_test: outputs kept in $work" >&2
  else
    rm -rf "$work"
  fi
}
trap finish EXIT

log() { echo "slurm_test: $*" >&2; }
fail() {
  log "$*"
  exit 1
}

eval "$("$root/scripts/slurm/local_cluster.sh" start "$cluster" "$parts")"
export QUANTSMITH=$quantsmith
mkdir -p "$work/logs"
# Jobs run where they were submitted; their logs land there.
cd "$work/logs"
start_time=$(date +%s)

# Every file under a directory with its SHA-256, paths relative to it. A job's fingerprint
# covers its sources' modification times (a resume must notice a source rewritten in place), so
# a job reading outputs that another run wrote records another fingerprint: job files are
# compared with that one field blanked, and a finished-marker (which holds nothing but the
# fingerprint) by its presence; every other byte as it is.
digests() {
  (
    cd "$1"
    find . -type f ! -name quantsmith-job.json ! -name '.quantsmith-*-finished' -print0 |
      sort -z | xargs -0 sha256sum
    find . -type f -name quantsmith-job.json -print0 | sort -z | while IFS= read -r -d '' file; do
      echo "$(sed 's/"fingerprint": *"[0-9a-f]*"/"fingerprint": ""/' "$file" | sha256sum |
        cut -d' ' -f1)  $file (fingerprint blanked)"
    done
    find . -type f -name '.quantsmith-*-finished' | sort | sed 's/$/ (present)/'
  )
}

same_bytes() {
  local expected=$1 actual=$2
  if ! diff <(digests "$expected") <(digests "$actual") >"$work/diff.txt"; then
    cat "$work/diff.txt" >&2
    fail "$actual differs from $expected (files or bytes)"
  fi
}

# Waits until none of the jobs is queued or running; fails when the deadline passes.
wait_for_jobs() {
  local ids=$1
  while squeue -h -j "$ids" 2>/dev/null | grep -q .; do
    [ $(($(date +%s) - start_time)) -lt "$timeout_s" ] ||
      fail "jobs still queued after ${timeout_s} s:" \
        "$(squeue -h -j "$ids" -o '%i %T %r' | tr '\n' ';')"
    sleep 1
  done
}

# Every job (every array task) must have COMPLETED.
all_completed() {
  local ids=$1 id states
  for id in ${ids//,/ }; do
    states=$(scontrol -o show job "$id" | grep -o 'JobState=[A-Z_]*' | sort -u)
    [ "$states" = "JobState=COMPLETED" ] ||
      fail "job $id ended as: $(echo $states) (logs in $work/logs)"
  done
}

# --- 1. batch recipes: Slurm jobs vs one process -------------------------------------------
batch_recipes=(batch-nvfp4-then-validate batch-seed000-hybrid batch-seed002-mtp
  batch-seed003-mtp-int4-draft)
# Job files record their inputs' paths (a splice's sources are earlier steps' outputs), so
# both runs write under the same path: one process first, its outputs moved aside, then Slurm.
for name in "${batch_recipes[@]}"; do
  "$quantsmith" recipe run "$recipes/$name.yaml" --param "model=$model" \
    --param "work=$work/run/$name" >"$work/single-$name.txt" 2>&1 ||
    fail "recipe run $name (one process) failed: $(tail -5 "$work/single-$name.txt")"
  mkdir -p "$work/single"
  mv "$work/run/$name" "$work/single/$name"
done
log "single-process references done in $(($(date +%s) - start_time)) s"
all_ids=
for name in "${batch_recipes[@]}"; do
  "$quantsmith" recipe run "$recipes/$name.yaml" --submit slurm --partitions "$parts" \
    --param "model=$model" --param "work=$work/run/$name" >"$work/submit-$name.txt"
  ids=$(sed -n 's/^jobs: //p' "$work/submit-$name.txt")
  [ -n "$ids" ] || fail "recipe run --submit printed no job ids: $(cat "$work/submit-$name.txt")"
  # Every one of these recipes has a quantize, which must have become an array.
  grep -q "job array .* ($parts parts)" "$work/submit-$name.txt" ||
    fail "$name: no step became a job array: $(cat "$work/submit-$name.txt")"
  log "$name: $(grep -c '^\[' "$work/submit-$name.txt") jobs submitted ($ids)"
  all_ids=${all_ids:+$all_ids,}$ids
done
wait_for_jobs "$all_ids"
all_completed "$all_ids"
log "Slurm jobs done in $(($(date +%s) - start_time)) s"
for name in "${batch_recipes[@]}"; do
  same_bytes "$work/single/$name" "$work/run/$name"
  files=$(find "$work/run/$name" -type f | wc -l)
  log "$name: Slurm output identical to one process ($files files)"
done

# --- 2. a killed task and a requeued task ---------------------------------------------------
# Slow settings (the joint scale search, one thread, small shards) so that every part commits
# several shards over a few seconds and can be hit between two of them.
quantize_arguments=(quantize "$model" "$work/run/killed" --recipe "$recipes/glm5-nvfp4-seed001.yaml"
  --param boundary_layers=1 --scale-method joint --threads 1 --max-shard-size 512KB)
"$quantsmith" "${quantize_arguments[@]}" >"$work/single-killed.txt" 2>&1 ||
  fail "the single-process quantize failed: $(tail -5 "$work/single-killed.txt")"
mv "$work/run/killed" "$work/single/killed"
array=$(sbatch --parsable --array=0-$((parts - 1)) --output="$work/logs/killed-%A_%a.out" \
  "$root/scripts/slurm/partition_task.sbatch" "${quantize_arguments[@]}")
finalize=$(sbatch --parsable --dependency="afterok:$array" --kill-on-invalid-dep=yes \
  --output="$work/logs/killed-finalize-%j.out" \
  "$root/scripts/slurm/finalize.sbatch" "$work/run/killed")
log "array $array (4 parts) and finalize $finalize submitted"

# A task's quantsmith process: the pids Slurm tracks for the task, the one running our binary.
# (listpids wants the task's own job id, not ARRAY_TASK.)
task_quantsmith_pid() {
  local pid id record
  record=$(scontrol -o show job "${array}_$1" 2>/dev/null) || return 1
  # Until it starts, a task may be shown by the array's record, whose JobId is another task's.
  [[ $record == *" ArrayTaskId=$1 "* && $record == *" JobState=RUNNING "* ]] || return 1
  id=$(grep -o '^JobId=[0-9]*' <<<"$record" | cut -d= -f2)
  for pid in $(scontrol listpids "$id" 2>/dev/null | awk 'NR > 1 {print $1}'); do
    [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$quantsmith" ] && { echo "$pid"; return 0; }
  done
  return 1
}

# Shards part I has committed so far, from its job file in OUT (partitioned-jobs page).
committed_shards() {
  local file=$work/run/killed/quantsmith-job.part-$1-of-$parts.json
  [ -f "$file" ] || { echo 0; return; }
  grep -o '"xxh3_128"' "$file" | wc -l
}

# Shards assigned to part I (its job file lists them one per line).
assigned_shards() {
  local file=$work/run/killed/quantsmith-job.part-$1-of-$parts.json
  [ -f "$file" ] || { echo 0; return; }
  sed -n '/"assigned_shards": \[/,/\]/p' "$file" | grep -c '^ *[0-9]'
}

# Mid-way: the task's quantsmith runs and its part has committed at least one shard (so the
# restart has something to resume from) but not all of them. The process is found once
# (Slurm RPCs are slow); then only its job file is watched, every 10 ms.
hit_mid_way() {
  local task=$1 pid= deadline=$(($(date +%s) + 60)) committed
  until pid=$(task_quantsmith_pid "$task"); do
    [ "$(date +%s)" -lt "$deadline" ] || fail "task $task never started quantsmith"
    sleep 0.05
  done
  while committed=$(committed_shards "$task"); [ "$committed" -lt 1 ] ||
    [ "$committed" -ge "$(assigned_shards "$task")" ]; do
    kill -0 "$pid" 2>/dev/null ||
      fail "task $task finished before it could be caught between two shards"
    sleep 0.01
  done
  echo "$pid"
}

# Parts are balanced by bytes: with boundary_layers=1 parts 0 and 1 hold the quantized
# experts (seconds each), parts 2 and 3 mostly BF16 copies (a fraction of a second), so the
# first two are the ones that can be caught between two shards.
hit_mid_way 0 >/dev/null
scontrol requeue "${array}_0"
log "task ${array}_0: requeued by Slurm after $(committed_shards 0) committed shard(s)"
pid=$(hit_mid_way 1)
kill -KILL "$pid"
log "task ${array}_1: killed its quantsmith (pid $pid)" \
  "after $(committed_shards 1) committed shard(s)"

wait_for_jobs "$array,$finalize"
all_completed "$array,$finalize"
for task in 0 1; do
  restarts=$(scontrol -o show job "${array}_$task" | grep -o 'Restarts=[0-9]*')
  [ "$restarts" != "Restarts=0" ] || fail "task ${array}_$task was not restarted ($restarts)"
done
grep -q "requeued" "$work/logs/killed-${array}_1.out" ||
  fail "task 1's log does not show its self-requeue"
same_bytes "$work/single/killed" "$work/run/killed"
log "killed + requeued parts: output identical to one process"

# --- 3. bad input is not retried -------------------------------------------------------------
# An array not numbered 0..N-1 would leave a part unwritten: every task refuses at once with
# exit code 2, and nothing is requeued.
bad=$(sbatch --parsable --array=1-2 --output="$work/logs/bad-%A_%a.out" \
  "$root/scripts/slurm/partition_task.sbatch" "${quantize_arguments[@]}")
wait_for_jobs "$bad"
for task in 1 2; do
  record=$(scontrol -o show job "${bad}_$task")
  [[ $record == *" JobState=FAILED "* && $record == *" Restarts=0 "* &&
    $record == *" ExitCode=2:0 "* ]] ||
    fail "task ${bad}_$task of a misnumbered array ended as:" \
      "$(grep -oE '(JobState|Restarts|ExitCode)=[^ ]*' <<<"$record" | tr '\n' ' ')"
  grep -q "numbered 0-(N-1)" "$work/logs/bad-${bad}_$task.out" ||
    fail "task ${bad}_$task does not say why it refused"
done
log "a misnumbered array: refused at once, not retried"
log "passed in $(($(date +%s) - start_time)) s"
