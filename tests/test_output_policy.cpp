// The output policy every writing job shares (output_directory.h), end to end through the CLI:
// --force never deletes what is not ours and decides before deleting, bad output paths are
// named errors with exit 2, a second writer is refused by the lock, --resume checks committed
// shards against their digests, the manifest lets `validate --checksum` catch corruption of
// our outputs, and job files are the same for identical runs.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/job/executor.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/job/output_directory.h"
#include "qs/ckpt/job/output_manifest.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::directory_contents;
using testing::quoted;
using testing::run_cli;
using testing::ScratchDirectory;

const std::filesystem::path kModel = testing::bundled_model();

std::string quantize_command(const std::filesystem::path& out, const std::string& extra = "") {
  return "quantize " + quoted(kModel) + " " + quoted(out) + " --scheme nvfp4 --max-shard-size 4MB" +
         extra;
}

// The writing subcommands, each as a command line for OUT.
std::vector<std::string> writer_commands(const std::filesystem::path& out) {
  return {quantize_command(out),
          "splice " + quoted(out) + " --base " + quoted(kModel) + " --take " +
              quoted(std::filesystem::path(kModel.string() + ":mtp")),
          "mtp extract " + quoted(kModel) + " " + quoted(out),
          "mtp extract " + quoted(kModel) + " " + quoted(out) + " --requant int4-g32",
          "mtp inject " + quoted(kModel) + " " + quoted(kModel) + " " + quoted(out)};
}

// Flips one bit of the byte `from_end` bytes before the end of `file`.
void flip_byte(const std::filesystem::path& file, std::streamoff from_end) {
  std::fstream stream(file, std::ios::in | std::ios::out | std::ios::binary);
  stream.seekg(-from_end, std::ios::end);
  char byte = 0;
  stream.read(&byte, 1);
  stream.seekp(-from_end, std::ios::end);
  byte = static_cast<char>(byte ^ 1);
  stream.write(&byte, 1);
}

bool mentions(const testing::CliResult& result, const std::string& text) {
  return result.output.find(text) != std::string::npos;
}

std::vector<std::string> names_in(const std::filesystem::path& directory) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(directory))
    names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(OutputPolicy, ForceDecidesFromTheJobFileBeforeDeletingAnything) {
  ScratchDirectory scratch("policy-claim");
  const auto out = scratch.path() / "out";
  std::filesystem::create_directories(out);
  write_file_atomically(out / kJobFileName,
                        R"({"version": 2, "files": ["model.safetensors", "config.json"]})");
  write_file_atomically(out / "model.safetensors", "ours");
  write_file_atomically(out / ".model.safetensors.tmp-7-0", "a killed writer's");
  write_file_atomically(out / "weights.bin", "not ours");
  const auto before = names_in(out);
  EXPECT_EQ(testing::error_kind_of([&] { OutputDirectory::claim(out, OutputMode::Force); }),
            "output.not_empty");
  EXPECT_EQ(names_in(out), before);
  // The caller's own entries (mtp extract's staging directory) count as ours.
  std::filesystem::create_directories(out / "weights.bin.d");
  std::filesystem::remove(out / "weights.bin");
  EXPECT_EQ(testing::error_kind_of(
                [&] { OutputDirectory::claim(out, OutputMode::Force, {"weights.bin.d"}); }),
            "no error");
  EXPECT_TRUE(std::filesystem::is_empty(out));

  // A job file that is damaged, or names something outside OUT, decides nothing.
  for (const char* job : {"{not json", R"({"version": 2, "files": ["../elsewhere"]})"}) {
    write_file_atomically(out / kJobFileName, job);
    write_file_atomically(out / "model.safetensors", "ours?");
    EXPECT_EQ(testing::error_kind_of([&] { OutputDirectory::claim(out, OutputMode::Force); }),
              "job.invalid")
        << job;
    EXPECT_EQ(names_in(out),
              (std::vector<std::string>{"model.safetensors", std::string(kJobFileName)}));
  }

  // Resume needs our job file; a fresh run an empty directory.
  std::filesystem::remove(out / kJobFileName);
  EXPECT_EQ(testing::error_kind_of([&] { OutputDirectory::claim(out, OutputMode::Resume); }),
            "output.not_empty");
  EXPECT_EQ(testing::error_kind_of([&] { OutputDirectory::claim(out, OutputMode::Fresh); }),
            "output.not_empty");
  // One claim at a time, in this process too.
  const auto empty = scratch.path() / "empty";
  const auto held = OutputDirectory::claim(empty, OutputMode::Fresh);
  EXPECT_EQ(testing::error_kind_of([&] { OutputDirectory::claim(empty, OutputMode::Fresh); }),
            "output.locked");
}

TEST(OutputPolicy, ForceNeverDeletesAnotherModel) {
  ScratchDirectory scratch("policy-force-foreign");
  const auto out = scratch.path() / "other-model";
  std::filesystem::create_directories(out);
  testing::copy_bundled_model(out);
  write_file_atomically(out / "README.md", "someone else's model\n");
  const auto before = directory_contents(out);
  for (const auto& command : writer_commands(out)) {
    const auto result = run_cli(command + " --force");
    EXPECT_EQ(result.exit_code, 2) << command << "\n" << result.output;
    EXPECT_TRUE(mentions(result, "nothing was removed")) << result.output;
    EXPECT_EQ(directory_contents(out), before) << command;
  }
}

TEST(OutputPolicy, ForceRemovesOnlyWhatTheJobFileRecords) {
  ScratchDirectory scratch("policy-force-ours");
  const auto out = scratch.path() / "out";
  ASSERT_EQ(run_cli(quantize_command(out)).exit_code, 0);
  const auto finished = directory_contents(out);
  write_file_atomically(out / "notes.txt", "mine");
  auto refused = run_cli(quantize_command(out, " --force"));
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_TRUE(mentions(refused, "'notes.txt'")) << refused.output;
  auto with_notes = finished;
  with_notes["notes.txt"] = "mine";
  EXPECT_EQ(directory_contents(out), with_notes) << "nothing may be deleted before deciding";
  std::filesystem::remove(out / "notes.txt");
  EXPECT_EQ(run_cli(quantize_command(out, " --force")).exit_code, 0);
  EXPECT_EQ(directory_contents(out), finished);
  auto both = run_cli(quantize_command(out, " --force --resume"));
  EXPECT_EQ(both.exit_code, 2) << both.output;
}

TEST(OutputPolicy, EveryWriterRefusesAFinishedJobAndStartsOverWithForce) {
  for (std::size_t i = 0; i < 5; ++i) {
    ScratchDirectory scratch("policy-writers");
    const auto out = scratch.path() / "out";
    const auto command = writer_commands(out)[i];
    ASSERT_EQ(run_cli(command).exit_code, 0) << command;
    const auto first = directory_contents(out);
    const auto again = run_cli(command);
    EXPECT_EQ(again.exit_code, 2) << command << "\n" << again.output;
    EXPECT_TRUE(mentions(again, "--force")) << again.output;
    const auto forced = run_cli(command + " --force");
    EXPECT_EQ(forced.exit_code, 0) << command << "\n" << forced.output;
    EXPECT_EQ(directory_contents(out), first) << command;
    EXPECT_TRUE(directory_contents(out).contains(std::string(kManifestFileName))) << command;
  }
}

TEST(OutputPolicy, BadOutputPathsAreNamedErrorsWithExitTwo) {
  ScratchDirectory scratch("policy-paths");
  const auto& root = scratch.path();
  std::filesystem::create_symlink(root / "loop-b", root / "loop-a");
  std::filesystem::create_symlink(root / "loop-a", root / "loop-b");
  std::filesystem::create_symlink(root / "nowhere", root / "dangling");
  write_file_atomically(root / "file", "a file\n");
  const std::vector<std::pair<std::filesystem::path, std::string>> cases = {
      {root / "loop-a", "symbolic links"},
      {root / "dangling", "does not exist"},
      {root / "file", "is a file"},
      {"/dev/null", "not a directory"},
      {root / "file" / "sub", "not a directory"},
  };
  for (const auto& [path, message] : cases) {
    for (const auto& command : writer_commands(path)) {
      for (const char* flag : {"", " --force", " --resume"}) {
        const auto result = run_cli(command + flag);
        EXPECT_EQ(result.exit_code, 2) << command << flag << "\n" << result.output;
        EXPECT_FALSE(mentions(result, "internal error")) << result.output;
        EXPECT_TRUE(mentions(result, path.string() + ":")) << result.output;
        EXPECT_TRUE(mentions(result, message)) << command << flag << "\n" << result.output;
      }
    }
  }
  EXPECT_EQ(read_text_file(root / "file"), "a file\n");
  EXPECT_FALSE(std::filesystem::exists(root / "nowhere"));
}

TEST(OutputPolicy, UnwritableOutputIsAnIoErrorNamingThePath) {
  if (::geteuid() == 0)
    GTEST_SKIP() << "running as root: permission bits do not stop root, so a directory "
                    "without write permission cannot be made here";
  ScratchDirectory scratch("policy-permission");
  const auto parent = scratch.path() / "locked";
  std::filesystem::create_directories(parent);
  std::filesystem::permissions(
      parent, std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec);
  const auto result = run_cli(quantize_command(parent / "out"));
  std::filesystem::permissions(parent, std::filesystem::perms::owner_all);
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_TRUE(mentions(result, "Permission denied")) << result.output;
  EXPECT_TRUE(mentions(result, (parent / "out").string())) << result.output;
  EXPECT_FALSE(mentions(result, "internal error")) << result.output;
}

// Root passes permission bits, but sysfs refuses new directories to everyone: the same
// failure class (the system refused) as a read-only filesystem or a directory without write
// permission.
TEST(OutputPolicy, OutputTheSystemRefusesIsAnIoErrorNamingThePath) {
  const std::filesystem::path out = "/sys/quantsmith-output-policy-test";
  if (::mkdir(out.c_str(), 0755) == 0) {
    ::rmdir(out.c_str());
    GTEST_SKIP() << "this machine lets us create directories in /sys";
  }
  if (errno != EPERM && errno != EACCES && errno != EROFS)
    GTEST_SKIP() << "/sys refuses directories with another error here: " << std::strerror(errno);
  const auto result = run_cli(quantize_command(out));
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_TRUE(mentions(result, out.string() + ": cannot create")) << result.output;
  EXPECT_FALSE(mentions(result, "internal error")) << result.output;
}

TEST(OutputPolicy, ASecondWriterIsRefusedAtOnce) {
  ScratchDirectory scratch("policy-lock");
  const auto out = scratch.path() / "out";
  std::filesystem::create_directories(out);
  // Another writer holds OUT: the test process takes the lock quantsmith takes.
  const int held = ::open(out.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(held, 0);
  ASSERT_EQ(::flock(held, LOCK_EX | LOCK_NB), 0);
  for (const auto& command : writer_commands(out)) {
    for (const char* flag : {"", " --resume", " --force"}) {
      const auto result = run_cli(command + flag);
      EXPECT_EQ(result.exit_code, 2) << command << flag << "\n" << result.output;
      EXPECT_TRUE(mentions(result, "another quantsmith job is writing")) << result.output;
    }
  }
  EXPECT_TRUE(std::filesystem::is_empty(out));
  ::close(held);
  EXPECT_EQ(run_cli(quantize_command(out)).exit_code, 0);
}

TEST(OutputPolicy, ResumeRedoesACommittedShardWhoseBytesChanged) {
  ScratchDirectory scratch("policy-resume-digest");
  const auto reference = scratch.path() / "reference";
  ASSERT_EQ(run_cli(quantize_command(reference)).exit_code, 0);
  const auto out = scratch.path() / "out";
  ASSERT_EQ(run_cli(quantize_command(out)).exit_code, 0);
  const auto job = nlohmann::json::parse(read_text_file(out / kJobFileName));
  ASSERT_EQ(job["committed_shards"].size(), 3u);
  EXPECT_EQ(job["committed_shards"][1]["xxh3_128"].get<std::string>().size(), 32u);
  // Same size, one bit different: the size check alone keeps it.
  const auto shard = out / "model-00002-of-00003.safetensors";
  flip_byte(shard, 100);
  const auto resumed = run_cli(quantize_command(out, " --resume"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_TRUE(mentions(resumed, "model-00002-of-00003.safetensors: its xxh3-128 digest differs"))
      << resumed.output;
  EXPECT_TRUE(mentions(resumed, "2 shard(s) resumed")) << resumed.output;
  EXPECT_EQ(directory_contents(out), directory_contents(reference));
}

TEST(OutputPolicy, ValidateChecksumCatchesCorruptionOfOurOutputs) {
  ScratchDirectory scratch("policy-manifest");
  const auto out = scratch.path() / "out";
  ASSERT_EQ(run_cli(quantize_command(out)).exit_code, 0);
  auto clean = run_cli("validate --checksum " + quoted(out));
  ASSERT_EQ(clean.exit_code, 0) << clean.output;
  EXPECT_TRUE(mentions(clean, "manifest: 8 file(s) checked")) << clean.output;

  // One code byte of an NVFP4 weight: every structural and numeric check still passes.
  auto checkpoint = Checkpoint::open(out);
  const auto weight = checkpoint.at("model.layers.1.mlp.experts.2.down_proj.weight");
  ASSERT_EQ(weight.info->dtype, DType::U8);
  {
    std::fstream file(weight.shard->path(), std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(
        static_cast<std::streamoff>(weight.shard->header().data_start() + weight.info->begin));
    const char code = 0x77;
    file.write(&code, 1);
  }
  EXPECT_EQ(run_cli("validate " + quoted(out)).exit_code, 0);
  auto corrupt = run_cli("validate --checksum " + quoted(out));
  EXPECT_EQ(corrupt.exit_code, 1) << corrupt.output;
  EXPECT_TRUE(mentions(corrupt, "manifest.digest_mismatch")) << corrupt.output;
  EXPECT_TRUE(mentions(corrupt, weight.shard->path().string())) << corrupt.output;
  // Only that file is reported.
  EXPECT_TRUE(mentions(corrupt, "(1 problem(s)")) << corrupt.output;

  // The configs are covered too, and a shard validated alone is checked against its entry.
  write_file_atomically(out / "config.json",
                        read_text_file(out / "config.json") + std::string(" "));
  auto config = run_cli("validate --checksum --json " + quoted(out));
  EXPECT_EQ(config.exit_code, 1) << config.output;
  EXPECT_TRUE(mentions(config, "config.json")) << config.output;
  EXPECT_EQ(run_cli("validate --checksum " + quoted(weight.shard->path())).exit_code, 1);

  // A checkpoint we did not write has no manifest: said, not a problem.
  auto foreign = run_cli("validate --checksum " + quoted(kModel));
  EXPECT_EQ(foreign.exit_code, 0) << foreign.output;
  EXPECT_TRUE(mentions(foreign, "manifest: none")) << foreign.output;
}

TEST(OutputPolicy, SingleFileOutputsHaveAManifestToo) {
  ScratchDirectory scratch("policy-single");
  const auto out = scratch.path() / "draft";
  ASSERT_EQ(run_cli("mtp extract " + quoted(kModel) + " " + quoted(out)).exit_code, 0);
  ASSERT_TRUE(std::filesystem::exists(out / kSingleFileName));
  const auto manifest = read_manifest(out);
  ASSERT_TRUE(manifest);
  EXPECT_TRUE(manifest->contains(std::string(kSingleFileName)));
  EXPECT_EQ(run_cli("validate --checksum " + quoted(out / kSingleFileName)).exit_code, 0);
  flip_byte(out / kSingleFileName, 1);
  auto corrupt = run_cli("validate --checksum " + quoted(out / kSingleFileName));
  EXPECT_EQ(corrupt.exit_code, 1) << corrupt.output;
  EXPECT_TRUE(mentions(corrupt, "manifest.digest_mismatch")) << corrupt.output;
}

TEST(OutputPolicy, ChecksumExitCodesNonFiniteIsAProblemUnreadableIsBadInput) {
  ScratchDirectory scratch("policy-checksum-exit");
  const auto poisoned = scratch.path() / "poisoned";
  testing::rewrite_checkpoint(kModel, poisoned, [](testing::EditableTensor& tensor) {
    if (tensor.spec.name == "model.layers.0.self_attn.q_a_proj.weight") {
      const unsigned char nan_bf16[2] = {0xC0, 0x7F};
      std::memcpy(tensor.bytes.data(), nan_bf16, 2);
    }
    return true;
  });
  auto nan = run_cli("validate --checksum " + quoted(poisoned));
  EXPECT_EQ(nan.exit_code, 1) << nan.output;
  EXPECT_TRUE(mentions(nan, "data.non_finite")) << nan.output;

  const auto cut = scratch.path() / "cut";
  std::filesystem::create_directories(cut);
  const auto file = cut / kSingleFileName;
  std::filesystem::copy_file(poisoned / kSingleFileName, file);
  std::filesystem::resize_file(file, std::filesystem::file_size(file) - 1000);
  auto unreadable = run_cli("validate --checksum " + quoted(cut));
  EXPECT_EQ(unreadable.exit_code, 2) << unreadable.output;
}

TEST(OutputPolicy, IdenticalRunsLeaveIdenticalJobFiles) {
  ScratchDirectory scratch("policy-job-determinism");
  for (const char* requant : {"", " --requant int4-g32"}) {
    const auto first = scratch.path() / (std::string("first") + requant);
    const auto second = scratch.path() / (std::string("second") + requant);
    ASSERT_EQ(run_cli("mtp extract " + quoted(kModel) + " " + quoted(first) + requant).exit_code,
              0);
    ASSERT_EQ(run_cli("mtp extract " + quoted(kModel) + " " + quoted(second) + requant).exit_code,
              0);
    EXPECT_EQ(read_text_file(first / kJobFileName), read_text_file(second / kJobFileName))
        << requant;
    EXPECT_EQ(directory_contents(first), directory_contents(second)) << requant;
  }
}

}  // namespace
}  // namespace qs
