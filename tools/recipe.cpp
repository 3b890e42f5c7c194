// quantsmith recipe run R.yaml: the steps of a batch recipe (batch_recipe.h), each run as this
// same binary with an argv (no shell), in order, stopping at the first that fails.

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "cli_support.h"
#include "qs/ckpt/plan/batch_recipe.h"
#include "qs/ckpt/core/error.h"
#include "recipe_slurm.h"
#include "scheme_presets.h"

extern char** environ;

namespace qs::cli {
namespace {

// The running binary: a step runs exactly the quantsmith that runs the recipe, wherever it
// was installed and whatever PATH says.
constexpr const char* kSelfExecutable = "/proc/self/exe";

// Subcommands that keep a job file in their output directory, so `--resume` continues a killed
// run (and is a no-op on a finished one). Empty second word: the subcommand has no nested one.
constexpr std::array<std::pair<std::string_view, std::string_view>, 4> kResumableSubcommands{{
    {"quantize", ""},
    {"splice", ""},
    {"mtp", "extract"},
    {"mtp", "inject"},
}};

struct RecipeRunOptions {
  std::string recipe;
  std::vector<std::string> parameters;
  std::string from;
  bool resume = false;
  bool dry_run = false;
  bool json = false;
  std::string submit;  // "slurm": submit the steps as jobs instead of running them
  SlurmSubmitOptions slurm;
};

bool contains_word(const std::vector<std::string>& arguments, std::string_view word) {
  return std::find(arguments.begin(), arguments.end(), word) != arguments.end();
}

bool supports_resume(const std::vector<std::string>& arguments) {
  for (const auto& [subcommand, nested] : kResumableSubcommands)
    if (arguments[0] == subcommand &&
        (nested.empty() || (arguments.size() > 1 && arguments[1] == nested)))
      return true;
  return false;
}

// `--recipe X.yaml` written relative to the batch recipe: batch recipes sit beside the
// per-tensor recipes they use, and should run from any directory. A path that exists from the
// current directory wins, so nothing that worked before changes meaning.
std::string resolved_recipe_path(const std::string& path,
                                 const std::filesystem::path& recipe_directory) {
  const std::filesystem::path given(path);
  if (given.is_absolute() || std::filesystem::exists(given)) return path;
  const auto beside = recipe_directory / given;
  return std::filesystem::exists(beside) ? beside.lexically_normal().string() : path;
}

void resolve_recipe_arguments(std::vector<std::string>& arguments,
                              const std::filesystem::path& recipe_directory) {
  constexpr std::string_view kFlag = "--recipe";
  for (std::size_t i = 1; i < arguments.size(); ++i) {
    auto& word = arguments[i];
    if (word == kFlag && i + 1 < arguments.size()) {
      arguments[i + 1] = resolved_recipe_path(arguments[i + 1], recipe_directory);
      ++i;
    } else if (word.starts_with(std::string(kFlag) + "=")) {
      word = std::string(kFlag) + "=" +
             resolved_recipe_path(word.substr(kFlag.size() + 1), recipe_directory);
    }
  }
}

std::string command_text(const std::vector<std::string>& arguments) {
  std::string text = "quantsmith";
  for (const auto& word : arguments) text += " " + quote_command_word(word);
  return text;
}

std::string step_label(const BatchRecipe& recipe, std::size_t index) {
  return fmt::format("[{}/{}] {}", index + 1, recipe.steps.size(), recipe.steps[index].name);
}

// Everything that can be known wrong before the first step runs: the subcommand names.
void check_subcommands(const BatchRecipe& recipe, const CLI::App& root) {
  for (std::size_t i = 0; i < recipe.steps.size(); ++i) {
    const auto& name = recipe.steps[i].arguments[0];
    bool known = false;
    std::vector<std::string> names;
    for (const auto* subcommand : root.get_subcommands({})) {
      names.push_back(subcommand->get_name());
      known = known || subcommand->get_name() == name;
    }
    if (!known)
      throw_bad_input("batch_recipe.unknown_subcommand",
                      fmt::format("step {} '{}': '{}' is no quantsmith subcommand ({})", i + 1,
                                  recipe.steps[i].name, name, fmt::join(names, ", ")),
                      recipe.source);
  }
}

// While a step runs, Ctrl-C belongs to it (it finishes its shard and says how to resume); the
// batch only reacts to the step's exit code. Restores the dispositions when it goes away.
class ForegroundChildSignals {
 public:
  ForegroundChildSignals() {
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    sigaction(SIGINT, &ignore, &saved_interrupt_);
    sigaction(SIGQUIT, &ignore, &saved_quit_);
  }
  ~ForegroundChildSignals() {
    sigaction(SIGINT, &saved_interrupt_, nullptr);
    sigaction(SIGQUIT, &saved_quit_, nullptr);
  }
  ForegroundChildSignals(const ForegroundChildSignals&) = delete;
  ForegroundChildSignals& operator=(const ForegroundChildSignals&) = delete;

 private:
  struct sigaction saved_interrupt_ {};
  struct sigaction saved_quit_ {};
};

// How a step's process ended.
struct StepExit {
  int code = 0;    // its exit code, or 128 + N when signal N ended it (as a shell reports it)
  int signal = 0;  // that signal, or 0
};

// Runs `quantsmith ARGUMENTS` and waits for it. With `stdout_to_stderr` the step's standard
// output goes to our standard error, keeping our own standard output for the --json summary.
StepExit run_step(const std::vector<std::string>& arguments, bool stdout_to_stderr) {
  std::vector<std::string> words{"quantsmith"};
  words.insert(words.end(), arguments.begin(), arguments.end());
  std::vector<char*> argv;
  for (auto& word : words) argv.push_back(word.data());
  argv.push_back(nullptr);

  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGINT);
  sigaddset(&defaults, SIGQUIT);
  posix_spawnattr_setsigdefault(&attributes, &defaults);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGDEF);
  posix_spawn_file_actions_t file_actions;
  posix_spawn_file_actions_init(&file_actions);
  if (stdout_to_stderr)
    posix_spawn_file_actions_adddup2(&file_actions, STDERR_FILENO, STDOUT_FILENO);

  std::fflush(stdout);
  std::fflush(stderr);
  ForegroundChildSignals signals;
  pid_t child = 0;
  const int spawn_error =
      posix_spawn(&child, kSelfExecutable, &file_actions, &attributes, argv.data(), environ);
  posix_spawn_file_actions_destroy(&file_actions);
  posix_spawnattr_destroy(&attributes);
  if (spawn_error != 0)
    throw_io_error(
        "recipe.spawn_failed",
        fmt::format("cannot start {}: {}", command_text(arguments), std::strerror(spawn_error)),
        kSelfExecutable);
  int status = 0;
  while (waitpid(child, &status, 0) < 0) {
    if (errno != EINTR)
      throw_io_error(
          "recipe.wait_failed",
          fmt::format("waiting for {}: {}", command_text(arguments), std::strerror(errno)));
  }
  if (WIFSIGNALED(status)) return {128 + WTERMSIG(status), WTERMSIG(status)};
  return {WEXITSTATUS(status), 0};
}

enum class StepStatus { Skipped, Planned, Ok, Failed, NotRun };

const char* status_name(StepStatus status) {
  switch (status) {
    case StepStatus::Skipped:
      return "skipped";
    case StepStatus::Planned:
      return "planned";
    case StepStatus::Ok:
      return "ok";
    case StepStatus::Failed:
      return "failed";
    case StepStatus::NotRun:
      return "not run";
  }
  return "?";
}

struct StepOutcome {
  StepStatus status = StepStatus::NotRun;
  std::optional<int> exit_code;
  double seconds = 0;
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void print_json_summary(const BatchRecipe& recipe, const std::vector<StepOutcome>& outcomes,
                        bool dry_run, int exit_code, double seconds) {
  auto steps = nlohmann::ordered_json::array();
  for (std::size_t i = 0; i < recipe.steps.size(); ++i) {
    nlohmann::ordered_json step{{"number", i + 1},
                                {"name", recipe.steps[i].name},
                                {"command", recipe.steps[i].arguments},
                                {"status", status_name(outcomes[i].status)}};
    step["exit_code"] = outcomes[i].exit_code ? nlohmann::ordered_json(*outcomes[i].exit_code)
                                              : nlohmann::ordered_json(nullptr);
    step["seconds"] = outcomes[i].seconds;
    steps.push_back(std::move(step));
  }
  fmt::print("{}\n", nlohmann::ordered_json{{"recipe", recipe.source},
                                            {"description", recipe.description},
                                            {"dry_run", dry_run},
                                            {"steps", std::move(steps)},
                                            {"exit_code", exit_code},
                                            {"seconds", seconds}}
                         .dump(2));
}

// Recipes run `quantsmith` steps as child processes, and a step may itself be `recipe run`:
// the recipes being run (outermost first) travel to the children in this variable, so a
// recipe that runs itself, directly or through others, is refused instead of spawning
// processes until a limit stops it. Nesting deeper than kMaxRecipeDepth is refused as well.
constexpr const char* kRecipeChainVariable = "QUANTSMITH_RECIPE_CHAIN";
constexpr std::size_t kMaxRecipeDepth = 8;

// Checks `recipe` against the chain this process was started in and extends the chain for
// the steps it spawns.
void enter_recipe_chain(const std::filesystem::path& recipe) {
  const std::string self = std::filesystem::weakly_canonical(recipe).string();
  std::vector<std::string> chain;
  if (const char* inherited = std::getenv(kRecipeChainVariable)) {
    std::string text = inherited;
    for (std::size_t start = 0; start <= text.size();) {
      const auto end = std::min(text.find('\n', start), text.size());
      if (end > start) chain.push_back(text.substr(start, end - start));
      start = end + 1;
    }
  }
  if (std::find(chain.begin(), chain.end(), self) != chain.end())
    throw_bad_input("recipe.recursive",
                    fmt::format("a step of {} runs it again (recipes being run: {})", chain.back(),
                                fmt::join(chain, " → ")),
                    self);
  if (chain.size() >= kMaxRecipeDepth)
    throw_bad_input("recipe.too_deep",
                    fmt::format("recipes nested {} deep (recipes being run: {}); at most {}",
                                chain.size() + 1, fmt::join(chain, " → "), kMaxRecipeDepth),
                    self);
  chain.push_back(self);
  ::setenv(kRecipeChainVariable, fmt::format("{}", fmt::join(chain, "\n")).c_str(), 1);
}

int run_recipe(const RecipeRunOptions& options, const CLI::App& root) {
  const std::filesystem::path path(options.recipe);
  enter_recipe_chain(path);
  BatchRecipe recipe = load_batch_recipe(path, parse_parameters(options.parameters));
  check_subcommands(recipe, root);
  const std::size_t first = options.from.empty() ? 0 : find_batch_step(recipe, options.from);
  const std::filesystem::path recipe_directory(
      recipe.parameters.at(std::string(kRecipeDirectoryParameter)));
  for (auto& step : recipe.steps) {
    resolve_recipe_arguments(step.arguments, recipe_directory);
    if (options.resume && supports_resume(step.arguments) &&
        !contains_word(step.arguments, "--resume"))
      step.arguments.push_back("--resume");
  }

  if (!options.submit.empty()) {
    if (options.json)
      throw_bad_input("recipe.submit_json", "--json does not combine with --submit",
                      recipe.source);
    auto slurm = options.slurm;
    slurm.dry_run = options.dry_run;
    return submit_recipe_to_slurm(recipe, first, slurm);
  }

  std::vector<StepOutcome> outcomes(recipe.steps.size());
  for (std::size_t i = 0; i < first; ++i) outcomes[i].status = StepStatus::Skipped;
  const auto start = std::chrono::steady_clock::now();

  if (options.dry_run) {
    for (std::size_t i = first; i < recipe.steps.size(); ++i)
      outcomes[i].status = StepStatus::Planned;
    if (options.json) {
      print_json_summary(recipe, outcomes, true, kExitOk, 0);
      return kExitOk;
    }
    if (!recipe.description.empty()) fmt::print("# {}\n", recipe.description);
    for (std::size_t i = 0; i < recipe.steps.size(); ++i)
      fmt::print("{}: {}\n", step_label(recipe, i),
                 i < first ? fmt::format("skipped (--from {})", options.from)
                           : command_text(recipe.steps[i].arguments));
    return kExitOk;
  }

  int exit_code = kExitOk;
  for (std::size_t i = first; i < recipe.steps.size(); ++i) {
    const auto& step = recipe.steps[i];
    fmt::print(stderr, "{}: {}\n", step_label(recipe, i), command_text(step.arguments));
    const auto step_start = std::chrono::steady_clock::now();
    const StepExit ended = run_step(step.arguments, options.json);
    outcomes[i] = {ended.code == 0 ? StepStatus::Ok : StepStatus::Failed, ended.code,
                   seconds_since(step_start)};
    if (ended.code != 0) {
      fmt::print(stderr,
                 "quantsmith: recipe: step {}/{} '{}' {}; after fixing it, continue with "
                 "--from {}{}\n",
                 i + 1, recipe.steps.size(), step.name,
                 ended.signal ? fmt::format("was ended by signal {} ({}, exit code {})",
                                            ended.signal, strsignal(ended.signal), ended.code)
                              : fmt::format("failed with exit code {}", ended.code),
                 i + 1, supports_resume(step.arguments) && !options.resume ? " --resume" : "");
      exit_code = ended.code;
      break;
    }
  }
  const double seconds = seconds_since(start);
  if (exit_code == kExitOk)
    fmt::print(stderr, "quantsmith: recipe: {} step(s) done in {:.1f} s\n",
               recipe.steps.size() - first, seconds);
  if (options.json) print_json_summary(recipe, outcomes, false, exit_code, seconds);
  return exit_code;
}

}  // namespace

SubcommandRunner register_recipe(CLI::App& app) {
  auto* recipe = app.add_subcommand("recipe",
                                    "batch recipes: several quantsmith commands as one "
                                    "job (quantize, splice, validate, eval, ...)");
  recipe->require_subcommand(1);
  auto options = std::make_shared<RecipeRunOptions>();
  auto* run = recipe->add_subcommand(
      "run",
      "run the steps of a batch recipe (YAML with steps:) in order, each as this quantsmith "
      "binary; the first failing step stops the batch with its exit code. A relative --recipe "
      "path in a step that does not exist from the current directory is taken relative to the "
      "batch recipe's directory ({recipe_dir})");
  run->add_option("RECIPE", options->recipe, "batch recipe YAML (see recipes/batch-*.yaml)")
      ->required();
  run->add_option("--param", options->parameters,
                  "NAME=VALUE, repeatable: override a parameter the recipe declares")
      ->allow_extra_args(false);
  run->add_option("--from", options->from,
                  "start at this step (number from 1, or name); earlier steps are skipped");
  run->add_flag("--resume", options->resume,
                "append --resume to the steps that support it (quantize, splice, mtp extract, "
                "mtp inject), so a killed batch continues where it stopped");
  run->add_flag("--dry-run", options->dry_run,
                "print the expanded commands on stdout and run nothing");
  run->add_flag("--json", options->json,
                "summary on stdout (steps, commands, exit codes, seconds); the steps' own "
                "standard output goes to standard error");
  run->add_option("--submit", options->submit,
                  "submit the steps as jobs of this scheduler instead of running them: "
                  "slurm (sbatch; each step after the previous one succeeded; a step that "
                  "takes --partition becomes a job array and a finalize job). With --dry-run, "
                  "prints the sbatch calls as a shell script")
      ->check(CLI::IsMember({"slurm"}));
  run->add_option("--partitions", options->slurm.partitions,
                  "with --submit: array tasks (parts) for each step that takes --partition")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  run->add_option("--sbatch", options->slurm.sbatch_words,
                  "with --submit: sbatch options for every job, one shell-quoted line, e.g. "
                  "--sbatch='--gres=gpu:1 --time=04:00:00'");
  run->add_option("--retries", options->slurm.retries,
                  "with --submit: times a failing task of a resumable step requeues itself "
                  "(not on bad input, exit code 2)")
      ->capture_default_str();
  const CLI::App* root = &app;
  return [options, root]() { return run_recipe(*options, *root); };
}

}  // namespace qs::cli
