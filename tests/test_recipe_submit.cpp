// `quantsmith recipe run R --submit slurm`: what it would submit (--dry-run prints the sbatch
// calls as a shell script), checked word by word on the bundled seed recipes, and its refusals.
// Submitting to a real Slurm is scripts/slurm/slurm_test.sh (`make slurm-test`), which needs
// the Slurm daemons.

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "test_support.h"

namespace qs {
namespace {

using qs::testing::quoted;
using qs::testing::run_cli;
using qs::testing::run_cli_after;
using qs::testing::ScratchDirectory;
namespace fs = std::filesystem;

const fs::path kModel = QS_TEST_DATA_DIR "/glm5-tiny";
const fs::path kRecipes = QS_SOURCE_DIR "/recipes";

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The `jobN=$(sbatch ...)` lines of a dry run, in order.
std::vector<std::string> sbatch_lines(const std::string& script) {
  std::vector<std::string> lines;
  std::istringstream in(script);
  for (std::string line; std::getline(in, line);)
    if (line.starts_with("job")) lines.push_back(line);
  return lines;
}

std::string submit_dry_run(const fs::path& recipe, const fs::path& work,
                           const std::string& extra = "") {
  const auto result = run_cli("recipe run " + quoted(recipe) +
                              " --submit slurm --dry-run --param model=" + quoted(kModel) +
                              " --param work=" + quoted(work) + extra);
  EXPECT_EQ(result.exit_code, 0) << result.output;
  return result.standard_output;
}

// Seed 003: two quantizes (arrays), the draft extraction requantized to the target (one job:
// see the next test), a validate, an mtp inject (a splice: an array) and an eval.
TEST(RecipeSubmit, PartitionableStepsBecomeAnArrayAndAFinalizeJobInOneChain) {
  ScratchDirectory scratch("recipe-submit-seed003");
  const auto work = scratch.path() / "work";
  const auto script =
      submit_dry_run(kRecipes / "batch-seed003-mtp-int4-draft.yaml", work, " --partitions 3");
  const auto lines = sbatch_lines(script);
  ASSERT_EQ(lines.size(), 9u) << script;

  for (const std::size_t array : {0u, 2u, 6u}) {
    const auto& line = lines[array];
    EXPECT_TRUE(contains(line, "--array=0-2")) << line;
    EXPECT_TRUE(contains(line, "--requeue")) << line;
    EXPECT_TRUE(contains(line, "part=\"$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT\"")) << line;
    EXPECT_TRUE(contains(line, "--resume --partition \"$part\"")) << line;
    // A failed task requeues itself unless the input was bad (exit code 2).
    EXPECT_TRUE(contains(line, "[ $code -ne 2 ]")) << line;
    EXPECT_TRUE(contains(line, "scontrol requeue \"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\""))
        << line;
    EXPECT_TRUE(contains(line, "-lt 3 ]")) << line;  // the default --retries
  }
  EXPECT_TRUE(contains(lines[0], "quantize " + kModel.string() + " " + (work / "nvfp4").string()))
      << lines[0];

  // Each finalize names its step's output directory and waits for its array.
  const std::pair<std::size_t, fs::path> finalizes[] = {
      {1, work / "nvfp4"}, {3, work / "target"}, {7, work / "bf16-with-draft"}};
  for (const auto& [index, output] : finalizes) {
    const auto& line = lines[index];
    EXPECT_TRUE(contains(line, "finalize " + output.string() + "'")) << line;
    EXPECT_FALSE(contains(line, "--array")) << line;
  }

  // The requantized extraction: one job that resumes and requeues itself on failure.
  EXPECT_TRUE(contains(
      lines[4], "mtp extract " + (work / "nvfp4").string() + " " + (work / "draft").string()))
      << lines[4];
  EXPECT_FALSE(contains(lines[4], "--array")) << lines[4];
  EXPECT_TRUE(contains(lines[4], "--resume; code=$?")) << lines[4];
  EXPECT_TRUE(contains(lines[4], "scontrol requeue \"$SLURM_JOB_ID\"")) << lines[4];

  // One chain: every job after the first waits for the one before it.
  EXPECT_FALSE(contains(lines[0], "--dependency")) << lines[0];
  for (std::size_t i = 1; i < lines.size(); ++i) {
    EXPECT_TRUE(contains(lines[i], "--dependency=afterok:\"$job" + std::to_string(i) + "\""))
        << lines[i];
    EXPECT_TRUE(contains(lines[i], "--kill-on-invalid-dep=yes")) << lines[i];
  }

  // validate and eval take neither --partition nor --resume: one job each, run once.
  for (const std::size_t single : {5u, 8u}) {
    EXPECT_TRUE(contains(lines[single], "exec ")) << lines[single];
    EXPECT_FALSE(contains(lines[single], "--requeue")) << lines[single];
    EXPECT_FALSE(contains(lines[single], "--resume")) << lines[single];
  }
  EXPECT_TRUE(contains(lines[5], " validate " + (work / "draft").string())) << lines[5];
  EXPECT_TRUE(contains(lines[8], " eval ")) << lines[8];

  EXPECT_TRUE(
      contains(script, "echo \"jobs: $job1,$job2,$job3,$job4,$job5,$job6,$job7,$job8,$job9\""))
      << script;
  EXPECT_FALSE(fs::exists(work));

  // What it prints is a shell script sh accepts as written.
  const auto file = scratch.path() / "submit.sh";
  std::ofstream(file) << script;
  EXPECT_EQ(std::system(("sh -n " + quoted(file)).c_str()), 0) << script;
}

// Seed 002: calibrate (one job, not resumable), quantize (array), mtp inject (a splice:
// partitionable like splice), validate and eval; site options reach every job.
TEST(RecipeSubmit, EveryJobGetsTheSiteOptionsAndRetriesAsAsked) {
  ScratchDirectory scratch("recipe-submit-seed002");
  const auto work = scratch.path() / "work";
  const auto script =
      submit_dry_run(kRecipes / "batch-seed002-mtp.yaml", work,
                     " --partitions 2 --retries 5 --sbatch='--time=02:00:00 --gres=gpu:1'");
  const auto lines = sbatch_lines(script);
  ASSERT_GE(lines.size(), 6u) << script;
  for (const auto& line : lines) {
    EXPECT_TRUE(contains(line, "--time=02:00:00 --gres=gpu:1")) << line;
  }
  EXPECT_TRUE(contains(lines[0], " calibrate ")) << lines[0];
  EXPECT_FALSE(contains(lines[0], "--array")) << lines[0];
  EXPECT_FALSE(contains(lines[0], "--requeue")) << lines[0];
  EXPECT_TRUE(contains(lines[1], " quantize ")) << lines[1];
  EXPECT_TRUE(contains(lines[1], "--array=0-1")) << lines[1];
  EXPECT_TRUE(contains(lines[1], "-lt 5 ]")) << lines[1];
  EXPECT_TRUE(contains(lines[2], "finalize " + (work / "w4a16").string())) << lines[2];
}

TEST(RecipeSubmit, FromSubmitsTheRemainingStepsWithoutADependencyOnTheSkippedOnes) {
  ScratchDirectory scratch("recipe-submit-from");
  const auto work = scratch.path() / "work";
  const auto script = submit_dry_run(kRecipes / "batch-seed002-mtp.yaml", work, " --from eval");
  const auto lines = sbatch_lines(script);
  ASSERT_EQ(lines.size(), 1u) << script;
  EXPECT_TRUE(contains(lines[0], " eval ")) << lines[0];
  EXPECT_FALSE(contains(lines[0], "--dependency")) << lines[0];
}

// `mtp extract` takes --partition but refuses it for a requantized draft (--requant, --recipe,
// --target): such a step is one job, a plain extraction an array.
TEST(RecipeSubmit, ARequantizedDraftExtractionIsOneJob) {
  ScratchDirectory scratch("recipe-submit-extract");
  const auto recipe = scratch.path() / "extract.yaml";
  std::ofstream(recipe) << "parameters: {model: m, work: w}\n"
                           "steps:\n"
                           "  - run: mtp extract {model} {work}/plain\n"
                           "  - run: mtp extract {model} {work}/requant --requant int4\n"
                           "  - run: mtp extract {model} {work}/recipe --recipe r.yaml\n"
                           "  - run: mtp extract {model} {work}/target --target t\n";
  const auto work = scratch.path() / "work";
  const auto lines = sbatch_lines(submit_dry_run(recipe, work));
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_TRUE(contains(lines[0], "--array=")) << lines[0];
  EXPECT_TRUE(contains(lines[1], "finalize " + (work / "plain").string())) << lines[1];
  for (std::size_t i = 2; i < 5; ++i) {
    EXPECT_FALSE(contains(lines[i], "--array")) << lines[i];
    EXPECT_FALSE(contains(lines[i], "--partition")) << lines[i];
    EXPECT_TRUE(contains(lines[i], "--resume")) << lines[i];  // resumable: retried
  }

  // The refusal the rule mirrors: if mtp extract ever splits a requantized draft, this fails
  // and the rule in tools/recipe_slurm.cpp should go.
  const auto refused =
      run_cli("mtp extract " + quoted(kModel) + " " + quoted(scratch.path() / "draft") +
              " --requant int4 --partition 0/2");
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_TRUE(contains(refused.output, "BF16 extraction only")) << refused.output;
}

TEST(RecipeSubmit, Refusals) {
  ScratchDirectory scratch("recipe-submit-refusals");
  const std::string recipe = quoted(kRecipes / "batch-nvfp4-then-validate.yaml");
  const std::string work = " --param work=" + quoted(scratch.path() / "work");
  struct Case {
    const char* label;
    std::string arguments;
    const char* expected;
  };
  const Case cases[] = {
      {"json", " --submit slurm --json", "--json does not combine with --submit"},
      {"zero parts", " --submit slurm --partitions 0", "--partitions"},
      {"unknown scheduler", " --submit pbs", "--submit"},
  };
  for (const auto& c : cases) {
    const auto result = run_cli("recipe run " + recipe + work + c.arguments);
    EXPECT_EQ(result.exit_code, 2) << c.label << ": " << result.output;
    EXPECT_TRUE(contains(result.output, c.expected)) << c.label << ": " << result.output;
  }

  // No sbatch to run: the submission fails naming the step, and nothing ran.
  const auto no_sbatch =
      run_cli_after("PATH=/nonexistent;", "recipe run " + recipe + work + " --submit slurm");
  EXPECT_NE(no_sbatch.exit_code, 0) << no_sbatch.output;
  EXPECT_TRUE(contains(no_sbatch.output, "sbatch refused step 1 'quantize experts NVFP4'"))
      << no_sbatch.output;
  EXPECT_FALSE(fs::exists(scratch.path() / "work"));
}

}  // namespace
}  // namespace qs
