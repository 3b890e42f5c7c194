#pragma once
// Batch recipes: a list of quantsmith commands run in order (`quantsmith recipe run R.yaml`),
// e.g. quantize two sides of a hybrid, splice them, validate the result. A batch recipe is a
// different document from a per-tensor recipe (recipe.h): it has `steps:` where a per-tensor
// recipe has `rules:`.
//
//   description: NVFP4 experts on the bundled model, then validate
//   parameters:                      # defaults; `--param work=/scratch/x` overrides
//     model: tests/data/glm5-tiny
//     work: out/batch
//   steps:
//     - name: quantize                 # "step N" when omitted; names are unique
//       run: quantize {model} {work}/nvfp4 --recipe glm5-nvfp4-seed001.yaml
//     - name: validate
//       run: [validate, "{work}/nvfp4", --ref, "{model}"]
//
// `run` is a quantsmith command line without the program name (a leading "quantsmith" word is
// accepted and dropped). The string form is split into words the way a shell would split it,
// with single quotes, double quotes and backslash escapes but no expansion of any kind; the
// list form gives the words directly. Parameters are substituted after splitting, inside each
// word, so a value with spaces stays one argument. `{recipe_dir}` is built in: the directory of
// the recipe file. `{{` and `}}` are literal braces. Parsing reads nothing but the YAML text:
// whether files exist is the runner's business.

#include <cstddef>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace qs {

// The built-in parameter holding the recipe file's directory.
inline constexpr std::string_view kRecipeDirectoryParameter = "recipe_dir";

struct BatchStep {
  std::string name;
  // The subcommand and its arguments, parameters substituted (no program name).
  std::vector<std::string> arguments;
};

struct BatchRecipe {
  std::string source;  // the recipe file path as given
  std::string description;
  // Every parameter's value after --param overrides, the built-in recipe_dir included.
  std::map<std::string, std::string> parameters;
  std::vector<BatchStep> steps;
};

// Parses a batch recipe. `recipe_directory` becomes {recipe_dir}. `parameter_overrides` replace
// declared defaults; overriding an undeclared parameter (or recipe_dir) is an error, and so is
// leaving one declared without a value (`work:` with nothing after it) unset. Throws
// BadInput naming the file (and the step where there is one) with kinds:
//   batch_recipe.invalid_yaml, batch_recipe.invalid (wrong node types),
//   batch_recipe.per_tensor_recipe (a `rules:` document), batch_recipe.unknown_key,
//   batch_recipe.no_steps, batch_recipe.empty_command, batch_recipe.duplicate_step,
//   batch_recipe.unknown_parameter, batch_recipe.missing_parameter,
//   batch_recipe.bad_parameter_reference,
//   batch_recipe.unterminated_quote.
BatchRecipe parse_batch_recipe(std::string_view yaml_text, const std::string& source,
                               const std::filesystem::path& recipe_directory,
                               const std::map<std::string, std::string>& parameter_overrides = {});
// Reads `path` and parses it with {recipe_dir} = the file's directory ("." when it has none).
BatchRecipe load_batch_recipe(const std::filesystem::path& path,
                              const std::map<std::string, std::string>& parameter_overrides = {});

// Splits a command line into words like a POSIX shell without expansions: blanks separate
// words; '...' keeps everything literally; "..." keeps everything but \" \\ \$ \` escapes;
// outside quotes a backslash keeps the next character. "" is an empty word. Throws BadInput
// batch_recipe.unterminated_quote.
std::vector<std::string> split_command_words(std::string_view text);

// Replaces {name} by the parameter's value and {{ / }} by a brace. Throws BadInput
// batch_recipe.unknown_parameter for a name not in `parameters`, and
// batch_recipe.bad_parameter_reference for a brace that starts or ends no reference.
std::string substitute_parameters(std::string_view text,
                                  const std::map<std::string, std::string>& parameters);

// The index of the step `selector` names: a 1-based step number or a step's name. Throws
// BadInput batch_recipe.unknown_step listing the steps.
std::size_t find_batch_step(const BatchRecipe& recipe, std::string_view selector);

// A word quoted so that split_command_words (and a shell) gives it back unchanged; plain words
// stay bare. For printing commands a person can paste.
std::string quote_command_word(std::string_view word);

}  // namespace qs
