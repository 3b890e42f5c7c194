// recipe run --submit slurm: turns a batch recipe's steps into sbatch calls (recipe_slurm.h).

#include "recipe_slurm.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string_view>

#include "cli_support.h"
#include "qs/ckpt/core/error.h"
#include "subcommands.h"

extern char** environ;

namespace qs::cli {
namespace {

// Bad input: retrying the same command on the same files cannot help, so it is not retried.
constexpr int kNoRetryExitCode = kExitBadInput;

// The innermost subcommand that parsed (`mtp extract`, not `mtp`).
const CLI::App* parsed_leaf(const CLI::App& app) {
  for (const auto* subcommand : app.get_subcommands({}))
    if (subcommand->parsed()) return parsed_leaf(*subcommand);
  return &app;
}

// "mtp extract": the subcommand's words from the root.
std::string command_path(const CLI::App& leaf) {
  std::string path = leaf.get_name();
  for (const CLI::App* app = leaf.get_parent(); app && app->get_parent(); app = app->get_parent())
    path = app->get_name() + " " + path;
  return path;
}

// Options with which a subcommand that takes --partition refuses it at run time (not at
// parsing, so the definition does not show it): `mtp extract` splits only the BF16
// extraction, and a requantized draft's second stage reads the whole staged draft. Such a
// step runs as one job. test_recipe_submit checks every entry against the real refusal.
struct PartitionRefusal {
  std::string_view command;
  std::array<std::string_view, 3> options;
};
constexpr std::array<PartitionRefusal, 1> kPartitionRefusals{{
    {"mtp extract", {"--requant", "--recipe", "--target"}},
}};

bool partition_refused(const CLI::App& leaf) {
  const auto path = command_path(leaf);
  for (const auto& refusal : kPartitionRefusals) {
    if (refusal.command != path) continue;
    for (const auto name : refusal.options) {
      const auto* option = leaf.get_option_no_throw(std::string(name));
      if (option && option->count() > 0) return true;
    }
  }
  return false;
}

bool is_output_positional(const CLI::Option& option) {
  if (!option.get_positional()) return false;
  std::string name = option.get_name();
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return name == "out" || name == "output";
}

// A job's command: `sh` words (sbatch --wrap runs them with /bin/sh).
std::string shell_words(const std::vector<std::string>& words) {
  std::string text;
  for (const auto& word : words) text += (text.empty() ? "" : " ") + quote_command_word(word);
  return text;
}

// The command, then on failure (other than bad input, within `retries` restarts) a requeue of
// `this_job` (the task itself); Slurm ends the script once the requeue is recorded and starts
// the task again, which resumes.
std::string retrying_command(const std::string& command, const std::string& this_job,
                             unsigned retries) {
  return fmt::format(
      "{}; code=$?; if [ $code -ne 0 ] && [ $code -ne {} ] && "
      "[ \"${{SLURM_RESTART_COUNT:-0}}\" -lt {} ]; then "
      "echo \"quantsmith: exit code $code, requeued to resume\" >&2; "
      "scontrol requeue {} && sleep 60; fi; exit $code",
      command, kNoRetryExitCode, retries, this_job);
}

std::string self_executable() {
  std::error_code error;
  auto path = std::filesystem::read_symlink("/proc/self/exe", error);
  if (error)
    throw_io_error("recipe.no_executable",
                   fmt::format("cannot find this quantsmith binary: {}", error.message()),
                   "/proc/self/exe");
  return path.string();
}

// Job names show in squeue: which recipe, which step.
std::string job_name(const BatchRecipe& recipe, std::size_t step, std::string_view suffix) {
  const auto stem = std::filesystem::path(recipe.source).stem().string();
  return fmt::format("qs-{}-{}{}", stem, step + 1, suffix);
}

// One sbatch call; `after` is the call whose job it waits for (afterok), if any.
struct SbatchCall {
  std::size_t step = 0;
  std::string role;  // "job", "array", "finalize": how the summary names it
  std::vector<std::string> options;
  std::string command;  // the --wrap text
  std::optional<std::size_t> after;
};

std::vector<SbatchCall> plan_calls(const BatchRecipe& recipe, std::size_t first,
                                   const SlurmSubmitOptions& options) {
  const std::string quantsmith = self_executable();
  const auto site_options = split_command_words(options.sbatch_words);
  std::vector<SbatchCall> calls;
  auto add = [&](SbatchCall call) {
    if (!calls.empty()) call.after = calls.size() - 1;
    // A step that failed for good leaves the ones after it unrunnable: cancel them rather
    // than leave them pending forever.
    call.options.insert(call.options.begin(), {"--parsable", "--kill-on-invalid-dep=yes"});
    call.options.insert(call.options.end(), site_options.begin(), site_options.end());
    calls.push_back(std::move(call));
  };
  for (std::size_t i = first; i < recipe.steps.size(); ++i) {
    auto arguments = recipe.steps[i].arguments;
    const StepShape shape = step_shape(arguments);
    auto with_resume = [&] {
      if (std::find(arguments.begin(), arguments.end(), "--resume") == arguments.end())
        arguments.push_back("--resume");
    };
    std::vector<std::string> words{quantsmith};
    if (shape.partitionable) {
      with_resume();
      words.insert(words.end(), arguments.begin(), arguments.end());
      const std::string command = "part=\"$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT\"; " +
                                  shell_words(words) + " --partition \"$part\"";
      add({i,
           "array",
           {"--job-name=" + job_name(recipe, i, ""),
            fmt::format("--array=0-{}", options.partitions - 1), "--requeue", "--open-mode=append",
            "--output=slurm-%x-%A_%a.out"},
           retrying_command(command, "\"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\"",
                            options.retries),
           {}});
      add({i,
           "finalize",
           {"--job-name=" + job_name(recipe, i, "-finalize"), "--output=slurm-%x-%j.out"},
           "exec " + shell_words({quantsmith, "finalize", shape.output}),
           {}});
    } else if (shape.resumable) {
      with_resume();
      words.insert(words.end(), arguments.begin(), arguments.end());
      add({i,
           "job",
           {"--job-name=" + job_name(recipe, i, ""), "--requeue", "--open-mode=append",
            "--output=slurm-%x-%j.out"},
           retrying_command(shell_words(words), "\"$SLURM_JOB_ID\"", options.retries),
           {}});
    } else {
      words.insert(words.end(), arguments.begin(), arguments.end());
      add({i,
           "job",
           {"--job-name=" + job_name(recipe, i, ""), "--output=slurm-%x-%j.out"},
           "exec " + shell_words(words),
           {}});
    }
  }
  return calls;
}

std::vector<std::string> sbatch_words(const SbatchCall& call, const std::string& after_job) {
  std::vector<std::string> words{"sbatch"};
  words.insert(words.end(), call.options.begin(), call.options.end());
  if (call.after) words.push_back("--dependency=afterok:" + after_job);
  words.push_back("--wrap=" + call.command);
  return words;
}

// Runs `words` (looked up on PATH) and returns its standard output; stderr passes through.
// nullopt when it could not start or exited non-zero.
std::optional<std::string> run_capturing(const std::vector<std::string>& words) {
  int pipe_ends[2];
  if (pipe(pipe_ends) != 0) return std::nullopt;
  std::vector<std::string> owned = words;
  std::vector<char*> argv;
  for (auto& word : owned) argv.push_back(word.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_ends[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, pipe_ends[0]);
  pid_t child = 0;
  std::fflush(stdout);
  std::fflush(stderr);
  const int spawn_error = posix_spawnp(&child, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(pipe_ends[1]);
  std::string output;
  if (spawn_error == 0) {
    char buffer[4096];
    for (;;) {
      const ssize_t got = read(pipe_ends[0], buffer, sizeof buffer);
      if (got > 0) {
        output.append(buffer, static_cast<std::size_t>(got));
      } else if (got == 0 || errno != EINTR) {
        break;
      }
    }
  } else {
    fmt::print(stderr, "quantsmith: cannot run {}: {}\n", argv[0], std::strerror(spawn_error));
  }
  close(pipe_ends[0]);
  if (spawn_error != 0) return std::nullopt;
  int status = 0;
  while (waitpid(child, &status, 0) < 0)
    if (errno != EINTR) return std::nullopt;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return std::nullopt;
  return output;
}

// `sbatch --parsable` prints "ID" or "ID;CLUSTER".
std::optional<std::string> parsable_job_id(const std::string& output) {
  std::string id = output.substr(0, output.find_first_of(";\n"));
  if (id.empty() ||
      !std::all_of(id.begin(), id.end(), [](unsigned char c) { return std::isdigit(c) != 0; }))
    return std::nullopt;
  return id;
}

void print_dry_run(const BatchRecipe& recipe, const std::vector<SbatchCall>& calls) {
  fmt::print("#!/bin/sh\n# {}: {} step(s) as Slurm jobs (recipe run --submit slurm --dry-run)\n",
             recipe.source, recipe.steps.size() - calls.front().step);
  fmt::print("set -e\n");
  for (std::size_t i = 0; i < calls.size(); ++i) {
    const auto& call = calls[i];
    // A comment line: a step name cannot end it early.
    std::string name = recipe.steps[call.step].name;
    std::replace(name.begin(), name.end(), '\n', ' ');
    fmt::print("# step {}/{} '{}': {}\n", call.step + 1, recipe.steps.size(), name, call.role);
    // The dependency names the shell variable of the earlier call, unquoted so it expands.
    auto words = sbatch_words(call, "");
    std::string line = fmt::format("job{}=$(", i + 1);
    for (std::size_t w = 0; w < words.size(); ++w) {
      if (w) line += " ";
      line += words[w] == "--dependency=afterok:"
                  ? fmt::format("--dependency=afterok:\"$job{}\"", *call.after + 1)
                  : quote_command_word(words[w]);
    }
    fmt::print("{})\n", line);
  }
  std::string all;
  for (std::size_t i = 0; i < calls.size(); ++i)
    all += fmt::format("{}$job{}", i ? "," : "", i + 1);
  fmt::print("echo \"jobs: {}\"\n", all);
}

}  // namespace

StepShape step_shape(const std::vector<std::string>& arguments) {
  // A fresh command line: parsing marks options as set, and the running one must not change.
  CLI::App scratch{"quantsmith", "quantsmith"};
  scratch.require_subcommand(1);
  // The runners stay alive while parsing: a subcommand's parse callback may set state they own.
  std::vector<SubcommandRunner> runners;
  for (auto registration : all_subcommands()) runners.push_back(registration(scratch));
  std::vector<std::string> reversed(arguments.rbegin(), arguments.rend());
  try {
    scratch.parse(reversed);
  } catch (const CLI::ParseError& error) {
    throw_bad_input("recipe.bad_step", fmt::format("'quantsmith {}' does not parse: {}",
                                                   shell_words(arguments), error.what()));
  }
  const CLI::App* leaf = parsed_leaf(scratch);
  StepShape shape;
  shape.partitionable =
      leaf->get_option_no_throw("--partition") != nullptr && !partition_refused(*leaf);
  shape.resumable = leaf->get_option_no_throw("--resume") != nullptr;
  if (shape.partitionable) {
    for (const auto* option : leaf->get_options())
      if (is_output_positional(*option) && option->count() == 1)
        shape.output = option->results().front();
    if (shape.output.empty())
      throw_bad_input("recipe.bad_step",
                      fmt::format("'quantsmith {}' takes --partition but names no output "
                                  "directory to finalize",
                                  shell_words(arguments)));
  }
  return shape;
}

int submit_recipe_to_slurm(const BatchRecipe& recipe, std::size_t first,
                           const SlurmSubmitOptions& options) {
  if (options.partitions == 0)
    throw_bad_input("recipe.bad_partitions", "--partitions must be at least 1");
  if (first >= recipe.steps.size()) return kExitOk;
  const auto calls = plan_calls(recipe, first, options);
  if (options.dry_run) {
    print_dry_run(recipe, calls);
    return kExitOk;
  }

  std::vector<std::string> job_ids;
  for (const auto& call : calls) {
    const auto words = sbatch_words(call, call.after ? job_ids[*call.after] : std::string());
    const auto output = run_capturing(words);
    const auto id = output ? parsable_job_id(*output) : std::nullopt;
    if (!id) {
      // Nothing half-submitted stays queued: the jobs so far would run a recipe cut short.
      if (!job_ids.empty()) {
        std::vector<std::string> cancel{"scancel"};
        cancel.insert(cancel.end(), job_ids.begin(), job_ids.end());
        run_capturing(cancel);
      }
      throw_io_error(
          "recipe.submit_failed",
          fmt::format("sbatch refused step {} '{}'{}{}", call.step + 1,
                      recipe.steps[call.step].name,
                      output ? fmt::format(" (it printed '{}', not a job id)", *output) : "",
                      job_ids.empty() ? ""
                                      : fmt::format("; cancelled the {} job(s) submitted before "
                                                    "it ({})",
                                                    job_ids.size(), fmt::join(job_ids, ","))),
          recipe.source);
    }
    job_ids.push_back(*id);
    const std::string what =
        call.role == "array"
            ? fmt::format("job array {} ({} parts)", *id, options.partitions)
            : fmt::format("{} {}", call.role == "finalize" ? "finalize job" : "job", *id);
    fmt::print("[{}/{}] {}: {}\n", call.step + 1, recipe.steps.size(), recipe.steps[call.step].name,
               what);
  }
  fmt::print("jobs: {}\n", fmt::join(job_ids, ","));
  return kExitOk;
}

}  // namespace qs::cli
