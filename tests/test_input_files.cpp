// Inputs that once crashed, hung or exited with the wrong code: files that are not regular
// files, config.json numbers of the wrong type or size, JSON nested a million levels deep.
// Every one is bad input: exit 2 and one line naming the file (and the key).

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/io/config_numbers.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/core/json_input.h"
#include "test_support.h"

namespace qs {
namespace {

namespace fs = std::filesystem;
using testing::copy_bundled_model;
using testing::error_kind_of;
using testing::quoted;
using testing::run_cli_after;
using testing::ScratchDirectory;

const fs::path kFixture = QS_TEST_DATA_DIR "/glm5-tiny";

// Every command runs under `timeout`: a regression (blocking on a FIFO, looping over 10^12
// layers) then fails the test with exit code 124 instead of hanging the suite.
testing::CliResult run_bounded(const std::string& arguments) {
  return run_cli_after("timeout 120", arguments);
}

void expect_bad_input(const testing::CliResult& result, const std::string& file,
                      const std::string& detail) {
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("quantsmith: error: " + file), std::string::npos) << result.output;
  EXPECT_NE(result.output.find(detail), std::string::npos) << result.output;
  EXPECT_EQ(std::count(result.output.begin(), result.output.end(), '\n'), 1) << result.output;
}

// A copy of the bundled model in `scratch`, for a test to break.
fs::path bundled_model_copy(const ScratchDirectory& scratch) {
  const auto model = scratch.path() / "m";
  fs::create_directory(model);
  copy_bundled_model(model);
  return model;
}

void replace_with_fifo(const fs::path& path) {
  fs::remove(path);
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0) << path;
}

void write_text(const fs::path& path, const std::string& text) {
  fs::remove(path);
  write_file_atomically(path, text);
}

// ---- Inputs must be regular files ----

TEST(InputFiles, FifoConfigIsRefusedAtOnceByEveryCommand) {
  ScratchDirectory scratch("input");
  const auto model = bundled_model_copy(scratch);
  replace_with_fifo(model / "config.json");
  const std::string config = (model / "config.json").string();
  for (const std::string command :
       {"inspect " + quoted(model), "validate " + quoted(model),
        "quantize " + quoted(model) + " " + quoted(scratch.path() / "out") +
            " --scheme nvfp4 --dry-run"}) {
    SCOPED_TRACE(command);
    expect_bad_input(run_bounded(command), config, "FIFO");
  }
}

TEST(InputFiles, FifoShardIndexAndSingleFileAreRefused) {
  ScratchDirectory scratch("input");
  const auto model = bundled_model_copy(scratch);
  const auto shard = model / "model-00002-of-00002.safetensors";
  replace_with_fifo(shard);
  expect_bad_input(run_bounded("validate --checksum " + quoted(model)), shard.string(), "FIFO");

  replace_with_fifo(model / "model.safetensors.index.json");
  expect_bad_input(run_bounded("inspect " + quoted(model)),
                   (model / "model.safetensors.index.json").string(), "FIFO");

  const auto single = scratch.path() / "single.safetensors";
  replace_with_fifo(single);
  expect_bad_input(run_bounded("validate " + quoted(single)), single.string(), "FIFO");
}

TEST(InputFiles, FifoRecipeTokensCalibrationAndAuxiliaryFilesAreRefused) {
  ScratchDirectory scratch("input");
  const auto fifo = scratch.path() / "fifo";
  replace_with_fifo(fifo);
  const std::string out = quoted(scratch.path() / "out");
  expect_bad_input(
      run_bounded("quantize " + quoted(kFixture) + " " + out + " --recipe " + quoted(fifo)),
      fifo.string(), "FIFO");
  expect_bad_input(run_bounded("quantize " + quoted(kFixture) + " " + out +
                               " --scheme gptq-int4 --calib " + quoted(fifo)),
                   fifo.string(), "FIFO");
  expect_bad_input(
      run_bounded("generate " + quoted(kFixture) + " --tokens " + quoted(fifo) + " --max-new 1"),
      fifo.string(), "FIFO");
  expect_bad_input(run_bounded("recipe run " + quoted(fifo)), fifo.string(), "FIFO");

  // generation_config.json is copied to the output: a FIFO there is refused, not skipped.
  const auto model = bundled_model_copy(scratch);
  replace_with_fifo(model / "generation_config.json");
  expect_bad_input(run_bounded("quantize " + quoted(model) + " " + quoted(scratch.path() / "q") +
                               " --scheme int8"),
                   (model / "generation_config.json").string(), "FIFO");
}

TEST(InputFiles, SymlinksToRegularFilesAreFineDanglingLinksAndLoopsAreNamed) {
  ScratchDirectory scratch("input");
  const auto model = bundled_model_copy(scratch);
  const auto config = model / "config.json";
  fs::rename(config, scratch.path() / "real-config.json");
  fs::create_symlink(scratch.path() / "real-config.json", config);
  EXPECT_EQ(run_bounded("validate " + quoted(model)).exit_code, 0);

  fs::remove(config);
  fs::create_symlink(scratch.path() / "nowhere.json", config);
  expect_bad_input(run_bounded("validate " + quoted(model)), config.string(),
                   "symbolic link to a file that does not exist");
  EXPECT_EQ(error_kind_of([&] { ReadOnlyFile file(config); }), "file.dangling_link");

  fs::remove(config);
  fs::create_symlink("config.json", config);  // itself
  expect_bad_input(run_bounded("inspect " + quoted(model)), config.string(), "loop");
  EXPECT_EQ(error_kind_of([&] { ReadOnlyFile file(config); }), "file.symlink_loop");

  EXPECT_EQ(error_kind_of([&] { ReadOnlyFile file(model); }), "file.not_regular");
  EXPECT_EQ(error_kind_of([&] { ReadOnlyFile file(model / "absent"); }), "file.open");
}

// ---- config.json numbers ----

struct ConfigCase {
  const char* key;
  const char* value;  // JSON text
};

TEST(ConfigNumbers, WrongTypesAndOutOfRangeValuesExitTwoNamingKeyAndFile) {
  const ConfigCase cases[] = {
      {"num_hidden_layers", "1e12"},           // was: validate ran for ever
      {"num_hidden_layers", "1000000000000"},  // an integer, far too large
      {"num_hidden_layers", "4097"},
      {"num_hidden_layers", "-1"},
      {"num_hidden_layers", "0"},
      {"hidden_size", "\"6144\""},  // a string
      {"hidden_size", "64.5"},
      {"hidden_size", "true"},
      {"hidden_size", "[64]"},
      {"n_routed_experts", "65537"},
      {"vocab_size", "16777217"},
      {"eos_token_id", "[1, \"2\"]"},
      {"moe_intermediate_size", "18446744073709551615"},
  };
  ScratchDirectory scratch("input");
  const auto model = bundled_model_copy(scratch);
  const auto original = read_text_file(model / "config.json");
  for (const auto& [key, value] : cases) {
    SCOPED_TRACE(std::string(key) + " = " + value);
    auto config = nlohmann::json::parse(original);
    config.erase(key);
    // Spliced as text, so "1e12" reaches the reader exactly as written.
    std::string text = config.dump();
    text.insert(1, "\"" + std::string(key) + "\": " + value + ", ");
    write_text(model / "config.json", text);
    for (const std::string command :
         {"validate " + quoted(model), "inspect " + quoted(model),
          "quantize " + quoted(model) + " " + quoted(scratch.path() / "out") +
              " --scheme nvfp4 --dry-run"}) {
      SCOPED_TRACE(command);
      expect_bad_input(run_bounded(command), (model / "config.json").string(),
                       "\"" + std::string(key) + "\" is ");
    }
  }
}

TEST(ConfigNumbers, EveryRowAcceptsItsBoundsAndRejectsBeyondThem) {
  for (const ConfigNumberRange& range : config_number_ranges()) {
    SCOPED_TRACE(std::string(range.key));
    const std::string key(range.key);
    EXPECT_NO_THROW(check_config_numbers({{key, range.min}}, "config.json"));
    EXPECT_NO_THROW(check_config_numbers({{key, range.max}}, "config.json"));
    EXPECT_NO_THROW(check_config_numbers({{key, nullptr}}, "config.json"));  // as if absent
    try {
      check_config_numbers({{key, range.max + 1}}, "dir/config.json");
      ADD_FAILURE() << "max + 1 accepted";
    } catch (const Error& error) {
      EXPECT_EQ(error.kind(), "config.invalid_value");
      EXPECT_EQ(error.error_class(), ErrorClass::BadInput);
      EXPECT_EQ(error.file(), "dir/config.json");
      EXPECT_NE(error.detail().find("\"" + key + "\""), std::string::npos) << error.detail();
    }
    if (range.min > 0)
      EXPECT_EQ(error_kind_of([&] {
                  check_config_numbers({{key, range.min - 1}}, "c");
                }),
                "config.invalid_value");
    EXPECT_EQ(error_kind_of([&] {
                check_config_numbers({{key, "1"}}, "c");
              }),
              "config.invalid_value");
    EXPECT_EQ(error_kind_of([&] {
                check_config_numbers({{key, 1.0}}, "c");
              }),
              "config.invalid_value");
  }
  // The bundled model's config passes.
  EXPECT_NO_THROW(Checkpoint::open(kFixture));
}

TEST(ConfigNumbers, InRangeNumbersImplyingMillionsOfTensorsAreAProblemNotAnEndlessLoop) {
  ScratchDirectory scratch("input");
  const auto model = bundled_model_copy(scratch);
  auto config = nlohmann::json::parse(read_text_file(model / "config.json"));
  config["num_hidden_layers"] = 4096;  // each within its range, together 805 million tensors
  config["n_routed_experts"] = 65536;
  write_text(model / "config.json", config.dump());
  const auto result = run_bounded("validate " + quoted(model));
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("layout.invalid_dimensions"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("at most 1,000,000 tensors"), std::string::npos) << result.output;
  // Real GLM-5 (59,870 tensors) is well inside.
  EXPECT_EQ(
      run_bounded("synth --preset glm5 --dry-run --out " + quoted(scratch.path() / "g")).exit_code,
      0);
}

// ---- JSON inputs ----

TEST(JsonInputs, NestingBombsAndSyntaxErrorsExitTwoAtOnce) {
  ScratchDirectory scratch("input");
  const auto model = bundled_model_copy(scratch);
  const std::string million_arrays = std::string(1'000'000, '[') + std::string(1'000'000, ']');
  std::string million_objects;
  for (int i = 0; i < 1'000'000; ++i) million_objects += "{\"a\":";
  million_objects += "1" + std::string(1'000'000, '}');
  for (const char* name : {"config.json", "model.safetensors.index.json"}) {
    const auto path = model / name;
    const auto original = read_text_file(path);
    for (const std::string& text : {million_arrays, million_objects}) {
      write_text(path, text);
      expect_bad_input(run_bounded("validate " + quoted(model)), path.string(),
                       "nest deeper than 256 levels");
    }
    write_text(path, "{\"num_hidden_layers\": 4,");
    expect_bad_input(run_bounded("validate " + quoted(model)), path.string(), "not valid JSON");
    write_text(path, original);
  }
  // Recipes are YAML, which yaml-cpp reads with its own depth limit (its message: "bad file").
  const auto recipe = scratch.path() / "deep.yaml";
  write_text(recipe, std::string(100'000, '[') + std::string(100'000, ']'));
  const auto result = run_bounded("quantize " + quoted(model) + " " +
                                  quoted(scratch.path() / "out") + " --recipe " + quoted(recipe));
  expect_bad_input(result, recipe.string(), "YAML nested deeper than");
  expect_bad_input(run_bounded("recipe run " + quoted(recipe)), recipe.string(),
                   "YAML nested deeper than");
}

TEST(JsonInputs, NestingIsCountedOutsideStringsOnly) {
  const std::string deep_enough =
      std::string(kMaxJsonNesting, '[') + std::string(kMaxJsonNesting, ']');
  EXPECT_NO_THROW(parse_json_input(deep_enough, "test.invalid", "f"));
  EXPECT_EQ(error_kind_of([&] { parse_json_input("[" + deep_enough + "]", "test.invalid", "f"); }),
            "test.invalid");
  // Brackets inside strings (escaped quotes included) are text.
  const std::string in_string = "[\"\\\"" + std::string(1000, '[') + "\"]";
  EXPECT_NO_THROW(parse_json_input(in_string, "test.invalid", "f"));
  EXPECT_TRUE(parse_json_or_discarded("[" + deep_enough + "]").is_discarded());
  EXPECT_TRUE(parse_json_or_discarded("{").is_discarded());
  EXPECT_EQ(parse_json_or_discarded("{\"a\": 1}")["a"], 1);
}

}  // namespace
}  // namespace qs
