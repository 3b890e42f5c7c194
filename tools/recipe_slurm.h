#pragma once
// `quantsmith recipe run R.yaml --submit slurm`: a batch recipe's steps as Slurm jobs, each
// step's jobs depending on the previous step's (afterok), instead of running them here.
//
// A step whose subcommand takes --partition (quantize, splice, mtp extract) becomes a job
// array of N tasks, task I running the step with `--partition I/N --resume`, and a finalize
// job (`quantsmith finalize OUT`) after the whole array; any other step is one job. A task of
// a resumable step that fails with anything but bad input (exit code 2) requeues itself (up to
// `retries` times) and resumes from what it committed; while it waits, the jobs after it keep
// waiting too. A step that fails for good cancels the jobs after it (--kill-on-invalid-dep).
//
// The jobs run this quantsmith binary (its absolute path: it must be visible on the compute
// nodes) in the directory `recipe run` was started in, like sbatch's own default.

#include <cstddef>
#include <string>
#include <vector>

#include "qs/ckpt/plan/batch_recipe.h"

namespace qs::cli {

struct SlurmSubmitOptions {
  unsigned partitions = 1;   // array tasks for each step that takes --partition
  std::string sbatch_words;  // extra sbatch options for every job, split like a shell line
  unsigned retries = 3;      // self-requeues per task of a resumable step
  bool dry_run = false;      // print the sbatch calls as a shell script; submit nothing
};

// How one step maps onto jobs, read from the definition of its subcommand (not a list kept
// here): whether it takes --partition and --resume, and its output directory.
struct StepShape {
  bool partitionable = false;
  bool resumable = false;
  std::string output;  // the step's OUT, for `finalize OUT`; empty when not partitionable
};

// Parses `arguments` (a step's command without the program name) against a fresh copy of the
// quantsmith command line. Throws BadInput "recipe.bad_step" when it does not parse.
StepShape step_shape(const std::vector<std::string>& arguments);

// Submits steps `first`.. of `recipe` (parameters substituted, --recipe paths resolved) and
// prints one line per step and a last line `jobs: ID,ID,...` on stdout; with dry_run prints a
// shell script of the sbatch calls instead. A failed submission cancels the jobs submitted
// before it and throws IoError "recipe.submit_failed".
int submit_recipe_to_slurm(const BatchRecipe& recipe, std::size_t first,
                           const SlurmSubmitOptions& options);

}  // namespace qs::cli
