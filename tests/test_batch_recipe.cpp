// Batch recipes: parsing (parameters, substitution, both run: forms, shell-like quoting, every
// refusal) and `quantsmith recipe run` end to end on the bundled model: the example recipe
// quantizes and validates, a failing step stops the batch with its own exit code, --from,
// --resume, --dry-run and --json.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "qs/ckpt/plan/batch_recipe.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/file_io.h"
#include "test_support.h"

namespace qs {
namespace {

using qs::testing::error_kind_of;
using qs::testing::quoted;
using qs::testing::run_cli;
using qs::testing::ScratchDirectory;
namespace fs = std::filesystem;

const fs::path kModel = QS_TEST_DATA_DIR "/glm5-tiny";
const fs::path kExampleRecipe = QS_SOURCE_DIR "/recipes/batch-nvfp4-then-validate.yaml";

BatchRecipe parse(const std::string& yaml,
                  const std::map<std::string, std::string>& overrides = {}) {
  return parse_batch_recipe(yaml, "test.yaml", "some/dir", overrides);
}

// The detail of the error `yaml` is refused with ("no error" when it parses).
std::string refusal_of(const std::string& yaml,
                       const std::map<std::string, std::string>& overrides = {}) {
  try {
    parse(yaml, overrides);
  } catch (const Error& error) {
    return error.kind() + ": " + error.detail();
  }
  return "no error";
}

using Words = std::vector<std::string>;

TEST(BatchRecipe, SubstitutesParametersInStringAndListForms) {
  const auto recipe = parse(R"(
description: two sides
parameters:
  model: /models/glm5
  work: out/seed000
  bits: 4
steps:
  - name: W8A16 side
    run: quantize {model} {work}/w8a16 --recipe r.yaml --param experts=int{bits}
  - run: [validate, "{work}/w8a16", --ref, "{model}"]
)");
  EXPECT_EQ(recipe.description, "two sides");
  ASSERT_EQ(recipe.steps.size(), 2u);
  EXPECT_EQ(recipe.steps[0].name, "W8A16 side");
  EXPECT_EQ(recipe.steps[0].arguments, (Words{"quantize", "/models/glm5", "out/seed000/w8a16",
                                              "--recipe", "r.yaml", "--param", "experts=int4"}));
  EXPECT_EQ(recipe.steps[1].name, "step 2");
  EXPECT_EQ(recipe.steps[1].arguments,
            (Words{"validate", "out/seed000/w8a16", "--ref", "/models/glm5"}));
  EXPECT_EQ(recipe.parameters.at("recipe_dir"), "some/dir");
}

TEST(BatchRecipe, OverridesReplaceDefaultsAndValuesWithSpacesStayOneWord) {
  const auto recipe = parse(R"(
parameters: {work: out/a}
steps:
  - run: inspect {work}/x
)",
                            {{"work", "/scratch/my run"}});
  EXPECT_EQ(recipe.steps[0].arguments, (Words{"inspect", "/scratch/my run/x"}));
}

TEST(BatchRecipe, RecipeDirectoryIsTheFilesDirectory) {
  ScratchDirectory scratch("batch-recipe-dir");
  const auto path = scratch.path() / "r.yaml";
  std::ofstream(path) << "steps:\n  - run: inspect {recipe_dir}/model\n";
  const auto recipe = load_batch_recipe(path);
  EXPECT_EQ(recipe.steps[0].arguments[1], (scratch.path() / "model").string());
  EXPECT_EQ(recipe.source, path.string());
  // A file named without a directory: the current one.
  EXPECT_EQ(parse_batch_recipe("steps:\n  - run: inspect {recipe_dir}", "r.yaml", "")
                .steps[0]
                .arguments[1],
            ".");
}

TEST(BatchRecipe, LeadingProgramNameIsDropped) {
  EXPECT_EQ(parse("steps: [{run: quantsmith inspect m}]").steps[0].arguments,
            (Words{"inspect", "m"}));
}

TEST(BatchRecipe, SplitsCommandLinesLikeAShellWithoutExpansion) {
  EXPECT_EQ(split_command_words("  a  b\tc\n d "), (Words{"a", "b", "c", "d"}));
  EXPECT_EQ(split_command_words(R"(--take 'B:category=routed expert' "x y")"),
            (Words{"--take", "B:category=routed expert", "x y"}));
  EXPECT_EQ(split_command_words(R"(a'b'"c" "" '')"), (Words{"abc", "", ""}));
  EXPECT_EQ(split_command_words(R"("say \"hi\" \n" 'no \escape' a\ b)"),
            (Words{R"(say "hi" \n)", R"(no \escape)", "a b"}));
  EXPECT_EQ(split_command_words("$HOME ~ * `x` $(y)"), (Words{"$HOME", "~", "*", "`x`", "$(y)"}));
  EXPECT_TRUE(split_command_words("   ").empty());
  EXPECT_EQ(error_kind_of([] { split_command_words("a 'b c"); }),
            "batch_recipe.unterminated_quote");
  EXPECT_EQ(error_kind_of([] { split_command_words(R"(a "b\")"); }),
            "batch_recipe.unterminated_quote");
}

TEST(BatchRecipe, QuotedWordsSplitBackUnchanged) {
  const Words words{"plain-word.yaml", "with space", "it's", "", "a\"b", "{x}", "$HOME", "k=v"};
  std::string line;
  for (const auto& word : words) line += quote_command_word(word) + " ";
  EXPECT_EQ(split_command_words(line), words);
  EXPECT_EQ(quote_command_word("out/seed000/w8a16"), "out/seed000/w8a16");
}

TEST(BatchRecipe, BracesAreReferencesOrDoubled) {
  const std::map<std::string, std::string> parameters{{"a", "1"}, {"b_2", "x y"}};
  EXPECT_EQ(substitute_parameters("{a}-{b_2}{a}", parameters), "1-x y1");
  EXPECT_EQ(substitute_parameters("{{\"k\": {a}}}", parameters), "{\"k\": 1}");
  EXPECT_EQ(error_kind_of([&] { substitute_parameters("{c}", parameters); }),
            "batch_recipe.unknown_parameter");
  for (const char* text : {"{a", "a}", "{}", "{a b}", "{-a}"})
    EXPECT_EQ(error_kind_of([&] { substitute_parameters(text, parameters); }),
              "batch_recipe.bad_parameter_reference")
        << text;
}

TEST(BatchRecipe, UnknownParameterNamesTheStepBeforeAnythingRuns) {
  const auto refusal = refusal_of(R"(
parameters: {model: m}
steps:
  - name: first
    run: inspect {model}
  - name: check
    run: validate {work}/hybrid --ref {model}
)");
  EXPECT_NE(refusal.find("batch_recipe.unknown_parameter: step 2 'check': '{work}'"),
            std::string::npos)
      << refusal;
}

TEST(BatchRecipe, RefusesMalformedRecipes) {
  struct Case {
    const char* label;
    const char* yaml;
    const char* expected;  // kind and the start of the detail
  };
  const Case cases[] = {
      {"unknown top-level key", "steps: [{run: inspect m}]\nformat: modelopt",
       "batch_recipe.unknown_key: unknown key 'format' in the batch recipe"},
      {"unknown step key", "steps: [{run: inspect m, action: keep}]",
       "batch_recipe.unknown_key: step 1: unknown key 'action' in a step"},
      {"empty steps", "description: x\nsteps: []",
       "batch_recipe.no_steps: a batch recipe needs a non-empty list of steps"},
      {"no steps", "description: x", "batch_recipe.no_steps"},
      {"steps not a list", "steps: {run: inspect m}", "batch_recipe.no_steps"},
      {"step without run", "steps: [{name: a}]",
       "batch_recipe.empty_command: step 1 'a': a step needs run:"},
      {"empty run string", "steps: [{run: '  '}]", "batch_recipe.empty_command"},
      {"empty run list", "steps: [{run: []}]", "batch_recipe.empty_command"},
      {"only the program name", "steps: [{run: quantsmith}]", "batch_recipe.empty_command"},
      {"run is a mapping", "steps: [{run: {a: b}}]", "batch_recipe.invalid"},
      {"unquoted brace word in a list", "parameters: {m: x}\nsteps: [{run: [inspect, {m}]}]",
       "batch_recipe.invalid: step 1: the words of a run: list must be strings (quote"},
      {"unterminated quote", "steps: [{run: \"inspect 'm\"}]",
       "batch_recipe.unterminated_quote: step 1: unterminated single quote"},
      {"duplicate step names", "steps: [{name: a, run: inspect m}, {name: a, run: inspect n}]",
       "batch_recipe.duplicate_step: step 2 'a'"},
      {"numeric step name", "steps: [{name: '2', run: inspect m}]",
       "batch_recipe.invalid: step 1: a step named '2' would be ambiguous"},
      {"parameters not a mapping", "parameters: [a]\nsteps: [{run: inspect m}]",
       "batch_recipe.invalid: parameters must be a mapping"},
      {"declared recipe_dir", "parameters: {recipe_dir: x}\nsteps: [{run: inspect m}]",
       "batch_recipe.invalid: 'recipe_dir' is built in"},
      {"bad parameter name", "parameters: {a-b: x}\nsteps: [{run: inspect m}]",
       "batch_recipe.invalid: parameter name 'a-b'"},
      {"parameter without default not given",
       "parameters:\n  work:\nsteps:\n  - run: inspect {work}",
       "batch_recipe.missing_parameter: no value for work: give --param work=VALUE"},
      {"not a mapping", "- run: inspect m",
       "batch_recipe.invalid: a batch recipe is a YAML mapping"},
      {"broken YAML", "steps: [{run: inspect m}", "batch_recipe.invalid_yaml"},
      {"per-tensor recipe", "format: modelopt\nrules:\n  - action: nvfp4\n",
       "batch_recipe.per_tensor_recipe: this is a per-tensor recipe (it has rules:)"},
  };
  for (const auto& c : cases) {
    const auto refusal = refusal_of(c.yaml);
    EXPECT_TRUE(refusal.starts_with(c.expected)) << c.label << ": " << refusal;
  }
}

TEST(BatchRecipe, RefusesOverridesOfUndeclaredParameters) {
  const char* yaml = "parameters: {work: out}\nsteps:\n  - run: inspect {work}";
  EXPECT_TRUE(refusal_of(yaml, {{"wrok", "x"}})
                  .starts_with("batch_recipe.unknown_parameter: --param wrok: the recipe declares "
                               "no such parameter (it declares: work)"));
  EXPECT_TRUE(refusal_of(yaml, {{"recipe_dir", "x"}})
                  .starts_with("batch_recipe.unknown_parameter: --param recipe_dir: built in"));
  EXPECT_EQ(parse("parameters:\n  work:\nsteps:\n  - run: inspect {work}", {{"work", "w"}})
                .steps[0]
                .arguments[1],
            "w");
}

TEST(BatchRecipe, FindsStepsByNumberOrName) {
  const auto recipe = parse("steps: [{name: a, run: inspect m}, {name: b c, run: inspect n}]");
  EXPECT_EQ(find_batch_step(recipe, "1"), 0u);
  EXPECT_EQ(find_batch_step(recipe, "2"), 1u);
  EXPECT_EQ(find_batch_step(recipe, "b c"), 1u);
  for (const char* selector : {"0", "3", "d", ""})
    EXPECT_EQ(error_kind_of([&] { find_batch_step(recipe, selector); }),
              "batch_recipe.unknown_step")
        << selector;
}

TEST(BatchRecipe, EveryRecipeInTheRepositoryIsOneKindOrTheOther) {
  const auto example = load_batch_recipe(kExampleRecipe);
  ASSERT_EQ(example.steps.size(), 2u);
  EXPECT_EQ(example.steps[0].arguments[0], "quantize");
  EXPECT_EQ(example.steps[1].arguments[0], "validate");
  // Batch recipes (batch-*.yaml) parse and name real subcommands (a dry run checks them);
  // the per-tensor recipes beside them are told apart.
  std::size_t batch_recipes = 0;
  for (const auto& entry : fs::directory_iterator(QS_SOURCE_DIR "/recipes")) {
    if (entry.path().extension() != ".yaml") continue;
    const auto name = entry.path().filename().string();
    if (name.starts_with("batch-")) {
      ++batch_recipes;
      EXPECT_FALSE(load_batch_recipe(entry.path()).steps.empty()) << name;
      const auto dry_run = run_cli("recipe run " + quoted(entry.path()) + " --dry-run");
      EXPECT_EQ(dry_run.exit_code, 0) << name << ": " << dry_run.output;
    } else {
      EXPECT_EQ(error_kind_of([&] { load_batch_recipe(entry.path()); }),
                "batch_recipe.per_tensor_recipe")
          << name;
    }
  }
  EXPECT_GE(batch_recipes, 1u);
}

// ---- quantsmith recipe run ----

// A batch recipe file in `directory` with `yaml`; returns its quoted path.
std::string write_recipe(const fs::path& directory, const std::string& yaml) {
  const auto path = directory / "batch.yaml";
  std::ofstream(path) << yaml;
  return quoted(path);
}

// Runs the CLI with its standard output into `stdout_file` and its standard error captured
// (run_cli appends "2>&1", which after our own redirections would send stderr to the file
// too; ending the command with "; exit $?" makes that last redirection apply to `exit`).
qs::testing::CliResult run_cli_stdout_to(const std::string& arguments,
                                         const fs::path& stdout_file) {
  return run_cli(arguments + " 2>&1 >" + quoted(stdout_file) + "; exit $?");
}

std::string example_arguments(const fs::path& work) {
  return quoted(kExampleRecipe) + " --param work=" + quoted(work) +
         " --param model=" + quoted(kModel);
}

TEST(BatchRecipe, RunsTheExampleRecipeEndToEnd) {
  ScratchDirectory scratch("batch-recipe-example");
  const auto summary = scratch.path() / "summary.json";
  // The test runs outside the source tree: the step's `--recipe glm5-nvfp4-seed001.yaml` is
  // found beside the batch recipe.
  const auto result =
      run_cli_stdout_to("recipe run " + example_arguments(scratch.path()) + " --json", summary);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto resolved =
      (kExampleRecipe.parent_path() / "glm5-nvfp4-seed001.yaml").lexically_normal();
  EXPECT_NE(result.output.find("[1/2] quantize experts NVFP4: quantsmith quantize " +
                               kModel.string() + " " + (scratch.path() / "nvfp4").string() +
                               " --recipe " + resolved.string() + " --param boundary_layers=1\n"),
            std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("[2/2] validate against the source: quantsmith validate"),
            std::string::npos);
  // The steps' own output passes through (on stderr, as --json keeps stdout for the summary).
  EXPECT_NE(result.output.find("quantized " + kModel.string()), std::string::npos);
  EXPECT_NE(result.output.find("result: valid"), std::string::npos) << result.output;
  EXPECT_TRUE(fs::exists(scratch.path() / "nvfp4" / "hf_quant_config.json"));

  const auto json = nlohmann::json::parse(read_text_file(summary));
  EXPECT_EQ(json["exit_code"], 0);
  ASSERT_EQ(json["steps"].size(), 2u);
  for (const auto& step : json["steps"]) {
    EXPECT_EQ(step["status"], "ok");
    EXPECT_EQ(step["exit_code"], 0);
    EXPECT_GT(step["seconds"].get<double>(), 0.0);
  }
  EXPECT_EQ(json["steps"][1]["command"],
            (Words{"validate", (scratch.path() / "nvfp4").string(), "--ref", kModel.string()}));

  // Run again: quantize refuses the finished job; with --resume the batch completes.
  const auto again = run_cli("recipe run " + example_arguments(scratch.path()));
  EXPECT_EQ(again.exit_code, 2) << again.output;
  EXPECT_NE(again.output.find("continue with --from 1 --resume"), std::string::npos)
      << again.output;
  const auto resumed = run_cli("recipe run " + example_arguments(scratch.path()) + " --resume");
  EXPECT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("boundary_layers=1 --resume\n"), std::string::npos)
      << resumed.output;
  EXPECT_NE(resumed.output.find("1 shard(s) resumed"), std::string::npos);
}

// Quantize, then validate with a limit the NVFP4 error exceeds: validate exits 1 (problems
// found), which is what the batch must exit with, and the step after it never runs.
std::string failing_recipe_yaml(const fs::path& work) {
  return "parameters:\n  model: " + kModel.string() + "\n  work: " + work.string() +
         "\n"
         "steps:\n"
         "  - name: quantize\n"
         "    run: quantize {model} {work}/q --scheme nvfp4\n"
         "  - name: strict check\n"
         "    run: validate {work}/q --ref {model} --max-relative-error 0.001\n"
         "  - name: inspect\n"
         "    run: inspect {work}/q\n";
}

TEST(BatchRecipe, FailingStepStopsTheBatchWithItsExitCode) {
  ScratchDirectory scratch("batch-recipe-failing");
  const auto recipe = write_recipe(scratch.path(), failing_recipe_yaml(scratch.path()));
  const auto summary = scratch.path() / "summary.json";
  const auto result = run_cli_stdout_to("recipe run " + recipe + " --json", summary);
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("[2/3] strict check: "), std::string::npos);
  EXPECT_NE(result.output.find("reference.error_too_large"), std::string::npos);
  EXPECT_NE(result.output.find("quantsmith: recipe: step 2/3 'strict check' failed with exit "
                               "code 1; after fixing it, continue with --from 2\n"),
            std::string::npos)
      << result.output;
  EXPECT_EQ(result.output.find("[3/3]"), std::string::npos);

  const auto json = nlohmann::json::parse(read_text_file(summary));
  EXPECT_EQ(json["exit_code"], 1);
  EXPECT_EQ(json["steps"][0]["status"], "ok");
  EXPECT_EQ(json["steps"][1]["status"], "failed");
  EXPECT_EQ(json["steps"][1]["exit_code"], 1);
  EXPECT_EQ(json["steps"][2]["status"], "not run");
  EXPECT_TRUE(json["steps"][2]["exit_code"].is_null());

  // A bad-input exit (2) comes back as 2.
  const auto missing =
      run_cli("recipe run " + recipe + " --from 3 --param work=" + quoted(scratch.path() / "no"));
  EXPECT_EQ(missing.exit_code, 2) << missing.output;
  EXPECT_NE(missing.output.find("step 3/3 'inspect' failed with exit code 2"), std::string::npos);
}

TEST(BatchRecipe, FromStartsAtAStepByNumberOrName) {
  ScratchDirectory scratch("batch-recipe-from");
  const auto recipe = write_recipe(scratch.path(), failing_recipe_yaml(scratch.path()));
  ASSERT_EQ(run_cli("recipe run " + recipe + " --from 2").exit_code, 2)
      << "validate of a checkpoint that is not there yet";
  // Step 3 needs step 1's output: make it, then start after the failing check.
  ASSERT_EQ(
      run_cli("quantize " + quoted(kModel) + " " + quoted(scratch.path() / "q") + " --scheme nvfp4")
          .exit_code,
      0);
  for (const char* from : {"3", "inspect"}) {
    const auto result = run_cli("recipe run " + recipe + " --from '" + from + "'");
    EXPECT_EQ(result.exit_code, 0) << from << ": " << result.output;
    EXPECT_EQ(result.output.find("[1/3]"), std::string::npos);
    EXPECT_EQ(result.output.find("[2/3]"), std::string::npos);
    EXPECT_NE(result.output.find("[3/3] inspect: quantsmith inspect"), std::string::npos);
    EXPECT_NE(result.output.find("1 step(s) done"), std::string::npos);
  }
  const auto unknown = run_cli("recipe run " + recipe + " --from validate");
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_NE(unknown.output.find("no step 'validate' (steps: 1 'quantize', 2 'strict check', 3 "
                                "'inspect')"),
            std::string::npos)
      << unknown.output;
}

TEST(BatchRecipe, DryRunPrintsTheCommandsAndRunsNothing) {
  ScratchDirectory scratch("batch-recipe-dry-run");
  const auto work = scratch.path() / "work dir";
  const auto result =
      run_cli("recipe run " + example_arguments(work) + " --dry-run --resume --from 1");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto resolved =
      (kExampleRecipe.parent_path() / "glm5-nvfp4-seed001.yaml").lexically_normal();
  const std::string quoted_output = "'" + (work / "nvfp4").string() + "'";
  EXPECT_EQ(result.output,
            "# Routed experts NVFP4 (seed 001 layout) on the bundled model, then validate\n"
            "[1/2] quantize experts NVFP4: quantsmith quantize " +
                kModel.string() + " " + quoted_output + " --recipe " + resolved.string() +
                " --param boundary_layers=1 --resume\n"
                "[2/2] validate against the source: quantsmith validate " +
                quoted_output + " --ref " + kModel.string() + "\n");
  EXPECT_FALSE(fs::exists(work));

  const auto from_two = run_cli("recipe run " + example_arguments(work) + " --dry-run --from 2");
  EXPECT_EQ(from_two.exit_code, 0);
  EXPECT_NE(from_two.output.find("[1/2] quantize experts NVFP4: skipped (--from 2)"),
            std::string::npos)
      << from_two.output;

  const auto json = run_cli("recipe run " + example_arguments(work) + " --dry-run --json");
  ASSERT_EQ(json.exit_code, 0) << json.output;
  const auto summary = nlohmann::json::parse(json.standard_output);
  EXPECT_EQ(summary["dry_run"], true);
  EXPECT_EQ(summary["steps"][0]["status"], "planned");
  EXPECT_FALSE(fs::exists(work));
}

TEST(BatchRecipe, RefusesBeforeAnythingRuns) {
  ScratchDirectory scratch("batch-recipe-refusals");
  const std::string first_step = "  - run: quantize " + kModel.string() + " " +
                                 (scratch.path() / "q").string() + " --scheme nvfp4\n";
  struct Case {
    const char* label;
    std::string yaml;
    std::string extra;
    const char* expected;
  };
  const Case cases[] = {
      {"unknown subcommand", "steps:\n" + first_step + "  - name: typo\n    run: valdate x\n", "",
       "step 2 'typo': 'valdate' is no quantsmith subcommand"},
      {"unknown parameter", "steps:\n" + first_step + "  - name: check\n    run: validate {out}\n",
       "", "step 2 'check': '{out}' names no parameter"},
      {"undeclared --param", "steps:\n" + first_step, " --param work=x",
       "--param work: the recipe declares no such parameter (it declares none)"},
      {"malformed --param", "steps:\n" + first_step, " --param work",
       "--param 'work': expected NAME=VALUE"},
      {"per-tensor recipe", "rules:\n  - action: nvfp4\n", "",
       "this is a per-tensor recipe (it has rules:), not a batch recipe (steps:); use it as "
       "`quantsmith quantize IN OUT --recipe FILE`"},
  };
  for (const auto& c : cases) {
    const auto result = run_cli("recipe run " + write_recipe(scratch.path(), c.yaml) + c.extra);
    EXPECT_EQ(result.exit_code, 2) << c.label << ": " << result.output;
    EXPECT_NE(result.output.find(c.expected), std::string::npos)
        << c.label << ": " << result.output;
    EXPECT_EQ(result.output.find("[1/"), std::string::npos) << c.label;
    EXPECT_FALSE(fs::exists(scratch.path() / "q")) << c.label;
  }
  const auto missing = run_cli("recipe run " + quoted(scratch.path() / "absent.yaml"));
  EXPECT_EQ(missing.exit_code, 2) << missing.output;
}

}  // namespace
}  // namespace qs

namespace qs {
namespace {

// A recipe whose step runs the recipe itself (directly, or through another recipe) is refused
// at the first repetition: one nested run, not a chain of processes until a limit stops it.
TEST(BatchRecipe, RefusesARecipeThatRunsItself) {
  ScratchDirectory scratch("batch-recipe-recursive");
  const auto recipe = write_recipe(scratch.path(),
                                   "steps:\n"
                                   "  - name: again\n"
                                   "    run: recipe run {recipe_dir}/batch.yaml\n");
  auto result = run_cli("recipe run " + recipe);
  EXPECT_NE(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("runs it again"), std::string::npos) << result.output;
  // The outer run started one inner run, which refused itself: two step lines, no third.
  EXPECT_EQ(result.output.find("runs it again"), result.output.rfind("runs it again"))
      << result.output;

  // Through a second recipe.
  std::ofstream(scratch.path() / "other.yaml") << "steps:\n"
                                                  "  - name: back\n"
                                                  "    run: recipe run {recipe_dir}/batch.yaml\n";
  const auto outer = write_recipe(scratch.path(),
                                  "steps:\n"
                                  "  - name: other\n"
                                  "    run: recipe run {recipe_dir}/other.yaml\n");
  result = run_cli("recipe run " + outer);
  EXPECT_NE(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("runs it again"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("other.yaml"), std::string::npos) << result.output;
}

}  // namespace
}  // namespace qs
