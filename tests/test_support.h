#pragma once
// What the test suites share: generators of safetensors files broken in one specific way each
// (so every failure class of the reader has a test built from code, not a hand-edited file),
// scratch directories, and running the CLI.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "qs/ckpt/io/safetensors.h"

namespace qs::testing {

// A header JSON text (without the 8-byte length) and the data bytes that follow it.
struct RawSafetensors {
  std::string header_json;
  std::string data;
  // Overrides the length field when set (to lie about the header size).
  std::uint64_t declared_header_length = UINT64_MAX;
  // Extra bytes appended after the data (trailing garbage) or, when negative, bytes cut off.
  std::int64_t size_adjustment = 0;

  std::string bytes() const;
  void write_to(const std::filesystem::path& path) const;
};

// Two small valid tensors ("a": F32 [2], "b": BF16 [2, 2]).
RawSafetensors valid_raw_file();

struct BrokenFileCase {
  std::string name;  // test label
  RawSafetensors file;
  std::string expected_kind;  // qs::Error::kind() the reader must report
};

// One case per failure class of the reader.
std::vector<BrokenFileCase> broken_file_cases();

// A scratch directory removed when the object goes away.
class ScratchDirectory {
 public:
  explicit ScratchDirectory(const std::string& label);
  ~ScratchDirectory();
  ScratchDirectory(const ScratchDirectory&) = delete;
  ScratchDirectory& operator=(const ScratchDirectory&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Runs the quantsmith CLI with `arguments` (already shell-quoted), capturing stdout+stderr.
struct CliResult {
  int exit_code;
  std::string output;  // stdout, then stderr
  // stdout alone: what `--json` prints, free of the progress lines a slow run writes to stderr.
  std::string standard_output;
};
CliResult run_cli(const std::string& arguments);
// Starts the CLI with `arguments` in the background, its output discarded, and returns its pid
// (for tests that kill a job part-way).
int spawn_cli(const std::vector<std::string>& arguments);
// The same after shell commands that set up the process (`ulimit -f 100;`, `trap '' XFSZ;`).
CliResult run_cli_after(const std::string& shell_prefix, const std::string& arguments);
// Single-quoted for the shell (test paths hold no quotes).
std::string quoted(const std::filesystem::path& path);

// tests/data/<name>: a bundled fixture model (glm5-tiny, the one most suites run, by default).
std::filesystem::path bundled_model(const std::string& name = "glm5-tiny");
// recipes/<file> of the source tree: a recipe quantsmith ships.
std::filesystem::path shipped_recipe(const std::string& file);

// Copies the bundled model's shards, index and configs into `to`, for tests that break them.
void copy_bundled_model(const std::filesystem::path& to);

// Every regular file of `directory` that is not hidden (name → bytes): two runs that should
// write the same checkpoint compare equal.
std::map<std::string, std::string> directory_contents(const std::filesystem::path& directory);

// One tensor of a checkpoint being rewritten by a test, to break it in one specific way.
struct EditableTensor {
  TensorSpec spec;
  std::vector<std::byte> bytes;
};
// Changes the tensor in place; returns false to drop it.
using TensorEdit = std::function<bool(EditableTensor&)>;

// Rewrites the checkpoint `source` into `target` as one shard with `edit` applied to each
// tensor; config.json and hf_quant_config.json are copied as they are.
void rewrite_checkpoint(const std::filesystem::path& source, const std::filesystem::path& target,
                        const TensorEdit& edit);

// The qs::Error kind `action` throws, or "no error".
std::string error_kind_of(const std::function<void()>& action);

}  // namespace qs::testing
