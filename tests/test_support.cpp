#include "test_support.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <random>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/file_io.h"

namespace qs::testing {

std::string RawSafetensors::bytes() const {
  std::uint64_t length =
      declared_header_length == UINT64_MAX ? header_json.size() : declared_header_length;
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((length >> (8 * i)) & 0xFF);
  out += header_json;
  out += data;
  if (size_adjustment > 0) out.append(static_cast<std::size_t>(size_adjustment), 'x');
  if (size_adjustment < 0) out.resize(out.size() - static_cast<std::size_t>(-size_adjustment));
  return out;
}

void RawSafetensors::write_to(const std::filesystem::path& path) const {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  auto content = bytes();
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
}

namespace {

std::string header_with(const std::string& a_entry, const std::string& b_entry,
                        const std::string& extra = {}) {
  return R"({"__metadata__":{"format":"pt"},"a":)" + a_entry + R"(,"b":)" + b_entry + extra + "}";
}

const std::string kA = R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
const std::string kB = R"({"dtype":"BF16","shape":[2,2],"data_offsets":[8,16]})";

RawSafetensors with_header(std::string header) {
  RawSafetensors file = valid_raw_file();
  file.header_json = std::move(header);
  return file;
}

}  // namespace

RawSafetensors valid_raw_file() {
  RawSafetensors file;
  file.header_json = header_with(kA, kB);
  file.data = std::string(16, '\x01');
  return file;
}

std::vector<BrokenFileCase> broken_file_cases() {
  std::vector<BrokenFileCase> cases;
  auto add = [&](std::string name, RawSafetensors file, std::string kind) {
    cases.push_back({std::move(name), std::move(file), std::move(kind)});
  };

  RawSafetensors empty;
  empty.header_json.clear();
  empty.declared_header_length = 0;
  empty.size_adjustment = -4;  // only 4 bytes remain
  add("TruncatedHeaderLength", empty, "safetensors.header_too_small");

  RawSafetensors too_large = valid_raw_file();
  too_large.declared_header_length = 100'000'001;
  add("HeaderLengthOverLimit", too_large, "safetensors.header_too_large");

  RawSafetensors beyond = valid_raw_file();
  beyond.declared_header_length = 4096;
  add("HeaderLengthBeyondFile", beyond, "safetensors.header_beyond_file");

  add("NotJson", with_header(R"({"a": {"dtype": "F32",)" + std::string(40, ' ')),
      "safetensors.header_not_json");
  add("InvalidUtf8", with_header("{\"\xff\xfe\":{}}   "), "safetensors.header_not_json");
  // Found by the fuzzer: nlohmann reports number overflow as out_of_range, not parse_error.
  add("NumberBeyondDouble", with_header(R"({"a": 1e999})"), "safetensors.header_not_json");
  add("TopLevelArray", with_header("[1, 2, 3]"), "safetensors.header_not_object");
  add("UnknownDtype",
      with_header(header_with(R"({"dtype":"F24","shape":[2],"data_offsets":[0,8]})", kB)),
      "safetensors.unknown_dtype");
  add("MissingShape", with_header(header_with(R"({"dtype":"F32","data_offsets":[0,8]})", kB)),
      "safetensors.tensor_entry_invalid");
  add("NegativeDimension",
      with_header(header_with(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})", kB)),
      "safetensors.tensor_entry_invalid");
  add("FractionalOffset",
      with_header(header_with(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8.5]})", kB)),
      "safetensors.tensor_entry_invalid");
  add("ReversedOffsets",
      with_header(header_with(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})", kB)),
      "safetensors.offsets_reversed");
  add("OverlappingOffsets",
      with_header(header_with(kA, R"({"dtype":"BF16","shape":[2,2],"data_offsets":[4,12]})")),
      "safetensors.offset_overlap");
  add("GappedOffsets",
      with_header(header_with(kA, R"({"dtype":"BF16","shape":[2,2],"data_offsets":[12,20]})")),
      "safetensors.offset_gap");
  add("FirstTensorNotAtZero",
      with_header(header_with(R"({"dtype":"F32","shape":[2],"data_offsets":[4,12]})",
                              R"({"dtype":"BF16","shape":[2],"data_offsets":[12,16]})")),
      "safetensors.offset_gap");
  add("SizeMismatch",
      with_header(header_with(kA, R"({"dtype":"BF16","shape":[2,3],"data_offsets":[8,16]})")),
      "safetensors.size_mismatch");
  add("ShapeOverflow",
      with_header(header_with(
          kA, R"({"dtype":"F64","shape":[4294967296,4294967296,16],"data_offsets":[8,16]})")),
      "safetensors.size_overflow");
  add("SubByteRemainder",
      with_header(header_with(kA, R"({"dtype":"F4","shape":[3],"data_offsets":[8,16]})")),
      "safetensors.sub_byte_misaligned");
  add("DuplicateName", with_header(header_with(kA, kB, R"(,"a":)" + kA)),
      "safetensors.duplicate_name");
  // The reference accepts it; we refuse a tensor that cannot be named in a report or a rule.
  add("EmptyName", with_header(R"({"":)" + kA + R"(,"b":)" + kB + "}"), "safetensors.empty_name");
  // Refused by a pre-scan before the parser (and any recursive walk of its result) sees it.
  add("NestingBomb", with_header(std::string(100'000, '[') + std::string(100'000, ']')),
      "safetensors.header_not_json");
  add("MetadataNotStrings",
      with_header(R"({"__metadata__":{"format":1},"a":)" + kA + R"(,"b":)" + kB + "}"),
      "safetensors.metadata_invalid");

  RawSafetensors out_of_bounds = valid_raw_file();
  out_of_bounds.size_adjustment = -3;
  add("DataTruncated", out_of_bounds, "safetensors.data_out_of_bounds");

  RawSafetensors trailing = valid_raw_file();
  trailing.size_adjustment = 5;
  add("TrailingBytes", trailing, "safetensors.trailing_bytes");
  return cases;
}

ScratchDirectory::ScratchDirectory(const std::string& label) {
  std::random_device entropy;
  path_ = std::filesystem::temp_directory_path() /
          ("qs-test-" + label + "-" + std::to_string(::getpid()) + "-" + std::to_string(entropy()));
  std::filesystem::create_directories(path_);
}

ScratchDirectory::~ScratchDirectory() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

CliResult run_cli(const std::string& arguments) { return run_cli_after("", arguments); }

extern "C" char** environ;

int spawn_cli(const std::vector<std::string>& arguments) {
  std::vector<std::string> copies = arguments;
  copies.insert(copies.begin(), QS_CLI_PATH);
  std::vector<char*> argv;
  for (auto& argument : copies) argv.push_back(argument.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  EXPECT_EQ(posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&actions);
  return pid;
}

CliResult run_cli_after(const std::string& shell_prefix, const std::string& arguments) {
  // stderr goes to a file of its own so that stdout stays parseable whatever the command logs.
  const ScratchDirectory scratch("cli-stderr");
  const auto stderr_path = scratch.path() / "stderr";
  std::string command =
      shell_prefix + " " + std::string(QS_CLI_PATH) + " " + arguments + " 2>" + quoted(stderr_path);
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return {-1, "popen failed", ""};
  std::string standard_output;
  std::array<char, 4096> buffer{};
  std::size_t got = 0;
  while ((got = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0)
    standard_output.append(buffer.data(), got);
  int status = ::pclose(pipe);
  std::ifstream standard_error(stderr_path, std::ios::binary);
  std::string output = standard_output;
  output.append(std::istreambuf_iterator<char>(standard_error), std::istreambuf_iterator<char>());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output, standard_output};
}

std::string quoted(const std::filesystem::path& path) {
  std::string text = "'";
  text.append(path.string()).append("'");
  return text;
}

std::map<std::string, std::string> directory_contents(const std::filesystem::path& directory) {
  std::map<std::string, std::string> contents;
  for (const auto& entry : std::filesystem::directory_iterator(directory)) {
    const auto name = entry.path().filename().string();
    if (!name.starts_with(".")) contents[name] = read_text_file(entry.path());
  }
  return contents;
}

std::filesystem::path bundled_model(const std::string& name) {
  return std::filesystem::path(QS_TEST_DATA_DIR) / name;
}

std::filesystem::path shipped_recipe(const std::string& file) {
  return std::filesystem::path(QS_SOURCE_DIR) / "recipes" / file;
}

void copy_bundled_model(const std::filesystem::path& to) {
  const std::filesystem::path bundled = bundled_model();
  for (const char* name : {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                           "model.safetensors.index.json", "config.json", "generation_config.json"})
    std::filesystem::copy_file(bundled / name, to / name);
}

std::string error_kind_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& error) {
    return error.kind();
  }
  return "no error";
}

void rewrite_checkpoint(const std::filesystem::path& source, const std::filesystem::path& target,
                        const TensorEdit& edit) {
  auto checkpoint = Checkpoint::open(source);
  std::vector<EditableTensor> tensors;
  for (const auto& location : checkpoint.tensors()) {
    EditableTensor tensor{{location.info->name, location.info->dtype, location.info->shape},
                          location.shard->read(*location.info)};
    if (edit(tensor)) tensors.push_back(std::move(tensor));
  }
  std::filesystem::create_directories(target);
  std::vector<TensorSpec> specs;
  for (const auto& tensor : tensors) specs.push_back(tensor.spec);
  SafetensorsWriter writer(target / "model.safetensors", specs);
  for (const auto& tensor : tensors) writer.write_tensor(tensor.spec.name, tensor.bytes);
  writer.commit();
  for (const char* name : {"config.json", "hf_quant_config.json"})
    if (std::filesystem::exists(source / name))
      std::filesystem::copy_file(source / name, target / name);
}

}  // namespace qs::testing
