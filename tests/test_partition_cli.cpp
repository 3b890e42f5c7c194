// Partitioned jobs as users run them: N workers (`--partition I/N`) writing one output
// directory, in any order or at once, finalized by the last worker or `quantsmith finalize`,
// leave every file byte-identical to a single-process run (NVFP4, W8A16 mix, INT4, GPTQ,
// splice, mtp extract; N = 1, 3, 4); and every refusal keeps the committed parts and finalizes
// nothing.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/ckpt/io/file_io.h"
#include "qs/ckpt/job/partitioned_job.h"
#include "test_support.h"

namespace qs {
namespace {

namespace fs = std::filesystem;
using testing::quoted;
using testing::run_cli;
using testing::ScratchDirectory;

const fs::path kModel = fs::path(QS_TEST_DATA_DIR) / "glm5-tiny";
const fs::path kRecipes = fs::path(QS_SOURCE_DIR) / "recipes";
// Small shards, so that every part of a 4-way split has several.
const std::string kShards = " --max-shard-size 1MB";

// Every entry of OUT, hidden ones included (name → bytes; directories as "<dir>").
std::map<std::string, std::string> everything_in(const fs::path& directory) {
  std::map<std::string, std::string> contents;
  for (const auto& entry : fs::directory_iterator(directory))
    contents[entry.path().filename().string()] =
        entry.is_directory() ? "<dir>" : read_text_file(entry.path());
  return contents;
}

bool finalized(const fs::path& out) {
  return fs::exists(out / kJobFileName) && fs::exists(out / kManifestFileName);
}

// A job: the command writing OUT, given as "<prefix> OUT <suffix>".
struct Job {
  std::string name;
  std::string prefix;
  std::string suffix;
  std::string command(const fs::path& out) const {
    return prefix + " " + quoted(out) + " " + suffix;
  }
};

class PartitionedJobs : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = std::make_unique<ScratchDirectory>("partition");
    // GPTQ's statistics (few rows: the split, not the quality, is under test).
    const auto calibrated = run_cli(
        "calibrate " + quoted(kModel) + " --tokens " + quoted(kModel / "tokens.safetensors") +
        ":calib --max-rows 16 --all-experts --out " + quoted(path("stats.qs")));
    ASSERT_EQ(calibrated.exit_code, 0) << calibrated.output;
    // The splice's sources, made once.
    for (const auto& [name, arguments] :
         {std::pair<std::string, std::string>{
              "w8a16", "--recipe " + quoted(kRecipes / "glm5-w8a16-int8mix-seed000.yaml")},
          {"nvfp4", "--scheme nvfp4 --format compressed-tensors"}}) {
      const auto result =
          run_cli("quantize " + quoted(kModel) + " " + quoted(path(name)) + " " + arguments);
      ASSERT_EQ(result.exit_code, 0) << result.output;
    }
  }
  static void TearDownTestSuite() { scratch_.reset(); }
  static fs::path path(const std::string& name) { return scratch_->path() / name; }
  static fs::path fresh(const std::string& name) {
    return path(name + "-" + std::to_string(++outputs_));
  }

  static std::vector<Job> jobs() {
    const std::string quantize = "quantize " + quoted(kModel);
    return {
        {"nvfp4", quantize, "--recipe " + quoted(kRecipes / "glm5-nvfp4-seed001.yaml") + kShards},
        {"w8a16", quantize,
         "--recipe " + quoted(kRecipes / "glm5-w8a16-int8mix-seed000.yaml") + kShards},
        {"int4", quantize, "--scheme int4" + kShards},
        // Calibrated: the split weighs experts by GPTQ's arithmetic, every worker reads STATS.
        {"gptq", quantize,
         "--recipe " + quoted(kRecipes / "glm5-w4a16-experts-seed002.yaml") + " --calib " +
             quoted(path("stats.qs")) + kShards},
        {"splice", "splice",
         "--base " + quoted(path("w8a16")) + " --take " +
             quoted(fs::path(path("nvfp4").string() + ":category=routed_expert;layers=1-3")) +
             kShards},
        {"mtp", "mtp extract " + quoted(kModel), "--max-shard-size 300KB"},
    };
  }

  // The single-process run of `job`, made once per job.
  static const std::map<std::string, std::string>& single(const Job& job) {
    static std::map<std::string, std::map<std::string, std::string>> made;
    if (!made.contains(job.name)) {
      const auto out = path("single-" + job.name);
      const auto result = run_cli(job.command(out));
      EXPECT_EQ(result.exit_code, 0) << result.output;
      made[job.name] = everything_in(out);
    }
    return made[job.name];
  }

  static inline std::unique_ptr<ScratchDirectory> scratch_;
  static inline int outputs_ = 0;
};

TEST_F(PartitionedJobs, EveryPartCountAndJobIsByteIdenticalToOneProcess) {
  for (const auto& job : jobs()) {
    const auto& expected = single(job);
    // Several shards each, or the split would prove little.
    ASSERT_GE(std::count_if(expected.begin(), expected.end(),
                            [](const auto& e) { return e.first.ends_with(".safetensors"); }),
              4)
        << job.name;
    for (std::size_t parts : {1, 3, 4}) {
      const auto out = fresh(job.name);
      // Parts in reverse order: the last to finish (part 0) is the one that finalizes.
      for (std::size_t index = parts; index-- > 0;) {
        const auto result = run_cli(job.command(out) + " --partition " + std::to_string(index) +
                                    "/" + std::to_string(parts));
        ASSERT_EQ(result.exit_code, 0) << job.name << " " << index << "/" << parts << "\n"
                                       << result.output;
        EXPECT_EQ(finalized(out), index == 0) << job.name << " " << index << "/" << parts;
        if (index == 0)
          EXPECT_NE(result.standard_output.find("finalized"), std::string::npos) << result.output;
      }
      EXPECT_EQ(everything_in(out), expected) << job.name << " in " << parts << " parts";
    }
  }
}

TEST_F(PartitionedJobs, WorkersRunningAtOnceFinalizeExactlyOnce) {
  const auto job = jobs()[0];
  const auto out = fresh("concurrent");
  std::string script;
  for (int index = 0; index < 4; ++index)
    script += std::string(QS_CLI_PATH) + " " + job.command(out) + " --partition " +
              std::to_string(index) + "/4 --resume >" +
              quoted(fs::path(out.string() + "-" + std::to_string(index) + ".log")) + " 2>&1 & ";
  ASSERT_EQ(std::system(("mkdir -p " + quoted(out) + "; " + script + "wait").c_str()), 0);
  std::size_t finalizers = 0;
  for (int index = 0; index < 4; ++index) {
    const auto log = read_text_file(out.string() + "-" + std::to_string(index) + ".log");
    EXPECT_EQ(log.find("error"), std::string::npos) << log;
    finalizers += log.find("every part is done") != std::string::npos;
  }
  EXPECT_EQ(finalizers, 1u);
  EXPECT_EQ(everything_in(out), single(job));
}

TEST_F(PartitionedJobs, FinalizeCompletesWhenTheLastWorkerCouldNot) {
  const auto job = jobs()[2];
  const auto out = fresh("finalize");
  for (const char* part : {"0/3", "1/3"})
    ASSERT_EQ(run_cli(job.command(out) + " --partition " + part).exit_code, 0);
  {
    // Another process holds OUT (as a worker would): the last part cannot finalize.
    const int held = ::open(out.c_str(), O_RDONLY | O_DIRECTORY);
    ASSERT_EQ(::flock(held, LOCK_SH), 0);
    const auto result = run_cli(job.command(out) + " --partition 2/3");
    ::close(held);
    ASSERT_EQ(result.exit_code, 0) << result.output;
    EXPECT_NE(result.output.find("quantsmith finalize"), std::string::npos) << result.output;
    EXPECT_FALSE(finalized(out));
    EXPECT_FALSE(fs::exists(out / kIndexFileName));
  }
  const auto result = run_cli("finalize " + quoted(out) + " --json");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto report = nlohmann::json::parse(result.standard_output);
  EXPECT_EQ(report["parts"], 3);
  EXPECT_EQ(report["already_finalized"], false);
  EXPECT_EQ(everything_in(out), single(job));
  // Again, and a worker resumed after the end: nothing to do, nothing changed.
  EXPECT_NE(run_cli("finalize " + quoted(out)).output.find("already finalized"), std::string::npos);
  const auto late = run_cli(job.command(out) + " --partition 1/3 --resume");
  EXPECT_EQ(late.exit_code, 0) << late.output;
  EXPECT_NE(late.output.find("already finalized"), std::string::npos) << late.output;
  EXPECT_EQ(everything_in(out), single(job));
  // A plain --resume of the finished job, as after a single-process run.
  EXPECT_EQ(run_cli(job.command(out) + " --resume").exit_code, 0);
  EXPECT_EQ(everything_in(out), single(job));
}

TEST_F(PartitionedJobs, DryRunShowsEachPartsContiguousShareAndWritesNothing) {
  const auto job = jobs()[3];  // GPTQ: shards weighed by arithmetic, not bytes alone
  const auto out = fresh("dry");
  std::size_t next = 1, total = 0;
  std::uint64_t cost = 0;
  for (int index = 0; index < 3; ++index) {
    const auto result =
        run_cli(job.command(out) + " --dry-run --json --partition " + std::to_string(index) + "/3");
    ASSERT_EQ(result.exit_code, 0) << result.output;
    const auto part = nlohmann::json::parse(result.standard_output)["part"];
    EXPECT_EQ(part["partition"], std::to_string(index) + "/3");
    EXPECT_EQ(part["first_shard"], next);
    next += part["shards"].get<std::size_t>();
    total = part["total_shards"];
    cost += part["cost"].get<std::uint64_t>();
    EXPECT_GT(part["cost"].get<std::uint64_t>(), 0u);
    EXPECT_LT(part["cost"].get<std::uint64_t>(), part["total_cost"].get<std::uint64_t>() / 2);
    if (index == 2) EXPECT_EQ(cost, part["total_cost"].get<std::uint64_t>());
  }
  EXPECT_EQ(next, total + 1);
  EXPECT_FALSE(fs::exists(out));
}

// --- bad input ------------------------------------------------------------------------------

// The error kind finalize throws, and the file it names.
std::pair<std::string, std::string> finalize_error(const fs::path& out) {
  try {
    finalize_partitioned_job(out);
  } catch (const Error& error) {
    return {error.kind(), error.file()};
  }
  return {"(none)", ""};
}

TEST_F(PartitionedJobs, MalformedPartitionIsRefusedBeforeAnythingIsWritten) {
  const auto job = jobs()[0];
  for (const char* bad : {"4/4", "0/0", "1", "x/4", "-1/4", "1/4/2"}) {
    const auto out = fresh("bad-flag");
    const auto result = run_cli(job.command(out) + " --partition '" + bad + "'");
    EXPECT_EQ(result.exit_code, 2) << bad << "\n" << result.output;
    EXPECT_NE(result.output.find("--partition"), std::string::npos) << result.output;
    EXPECT_EQ(std::count(result.output.begin(), result.output.end(), '\n'), 1) << result.output;
    EXPECT_FALSE(fs::exists(out)) << bad;
  }
  const auto out = fresh("bad-force");
  const auto result = run_cli(job.command(out) + " --partition 0/2 --force");
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("--force cannot"), std::string::npos) << result.output;
  const auto draft = run_cli("mtp extract " + quoted(kModel) + " " + quoted(fresh("bad-mtp")) +
                             " --requant int4 --partition 0/2");
  EXPECT_EQ(draft.exit_code, 2) << draft.output;
  EXPECT_NE(draft.output.find("BF16 extraction only"), std::string::npos) << draft.output;
}

TEST_F(PartitionedJobs, PartsOfAnotherJobOrSplitAreRefusedAndEveryCommittedPartKept) {
  const auto jobs = PartitionedJobs::jobs();
  const auto out = fresh("mixed");
  ASSERT_EQ(run_cli(jobs[0].command(out) + " --partition 0/2").exit_code, 0);
  const auto before = everything_in(out);
  const auto part0 = (out / "quantsmith-job.part-0-of-2.json").string();

  // Another recipe into the same OUT.
  auto result = run_cli(jobs[2].command(out) + " --partition 1/2");
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find(part0 + ": written by another job"), std::string::npos)
      << result.output;
  // The same job split another way.
  result = run_cli(jobs[0].command(out) + " --partition 1/3");
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find(part0 + ": part of a split into 2 parts"), std::string::npos)
      << result.output;
  // The same part again without --resume.
  result = run_cli(jobs[0].command(out) + " --partition 0/2");
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("use --resume"), std::string::npos) << result.output;
  // A single-process run into the parts' directory.
  result = run_cli(jobs[0].command(out) + " --resume");
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_EQ(everything_in(out), before);

  // A part of another job copied in beside them: finalize refuses naming it.
  const auto other = fresh("other");
  ASSERT_EQ(run_cli(jobs[2].command(other) + " --partition 1/2").exit_code, 0);
  fs::copy_file(other / "quantsmith-job.part-1-of-2.json", out / "quantsmith-job.part-1-of-2.json");
  EXPECT_EQ(finalize_error(out),
            std::make_pair(std::string("job.fingerprint_mismatch"),
                           (out / "quantsmith-job.part-1-of-2.json").string()));
  result = run_cli("finalize " + quoted(out));
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.output.find("part-1-of-2.json: written by another job"), std::string::npos)
      << result.output;
  EXPECT_FALSE(finalized(out));
  EXPECT_FALSE(fs::exists(out / kIndexFileName));
  fs::remove(out / "quantsmith-job.part-1-of-2.json");
  EXPECT_EQ(everything_in(out), before);
}

TEST_F(PartitionedJobs, FinalizeRefusesAMissingOrHalfWrittenPartAndResumeRepairsIt) {
  const auto job = jobs()[1];
  const auto out = fresh("half");
  for (const char* part : {"0/3", "2/3"})
    ASSERT_EQ(run_cli(job.command(out) + " --partition " + part).exit_code, 0);
  EXPECT_FALSE(finalized(out));

  // Part 1 never ran.
  const auto part1 = out / "quantsmith-job.part-1-of-3.json";
  EXPECT_EQ(finalize_error(out),
            std::make_pair(std::string("finalize.part_missing"), part1.string()));
  auto result = run_cli("finalize " + quoted(out));
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.output.find("part 1/3 has not run"), std::string::npos) << result.output;
  EXPECT_EQ(std::count(result.output.begin(), result.output.end(), '\n'), 1) << result.output;

  // Part 1 killed mid-way (staged: run it while another process holds OUT, so that it cannot
  // finalize, then take back its last commit): its job file lists the shards committed before
  // the kill, the shard being written is a temporary.
  {
    const int held = ::open(out.c_str(), O_RDONLY | O_DIRECTORY);
    ASSERT_EQ(::flock(held, LOCK_SH), 0);
    result = run_cli(job.command(out) + " --partition 1/3");
    ::close(held);
    ASSERT_EQ(result.exit_code, 0) << result.output;
  }
  auto state = nlohmann::json::parse(read_text_file(part1));
  ASSERT_GE(state["committed_shards"].size(), 2u);
  const std::string cut = state["committed_shards"].back()["file"];
  state["committed_shards"].erase(state["committed_shards"].size() - 1);
  write_file_atomically(part1, state.dump(2) + "\n");
  const auto shard_bytes = read_text_file(out / cut);
  fs::rename(out / cut, out / ("." + cut + ".tmp-99999-0"));
  fs::resize_file(out / ("." + cut + ".tmp-99999-0"), shard_bytes.size() / 2);
  EXPECT_EQ(finalize_error(out),
            std::make_pair(std::string("finalize.part_incomplete"), part1.string()));
  result = run_cli("finalize " + quoted(out));
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.output.find("part 1/3 committed"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("--partition 1/3 --resume"), std::string::npos) << result.output;
  EXPECT_FALSE(finalized(out));

  // A committed shard damaged on disk after its part finished.
  const std::string first = state["committed_shards"].front()["file"];
  fs::resize_file(out / first, 100);

  // Resuming part 1 removes the temporary, rewrites the damaged and the missing shard, and,
  // being the last, finalizes: OUT is the single-process output.
  result = run_cli(job.command(out) + " --partition 1/3 --resume");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find(first + ": 100 bytes"), std::string::npos) << result.output;
  EXPECT_TRUE(finalized(out));
  EXPECT_EQ(everything_in(out), single(job));
}

TEST_F(PartitionedJobs, FinalizeRefusesADamagedShardNamingIt) {
  const auto job = jobs()[2];
  const auto out = fresh("damaged");
  ASSERT_EQ(run_cli(job.command(out) + " --partition 0/2").exit_code, 0);
  {
    const int held = ::open(out.c_str(), O_RDONLY | O_DIRECTORY);
    ASSERT_EQ(::flock(held, LOCK_SH), 0);
    ASSERT_EQ(run_cli(job.command(out) + " --partition 1/2").exit_code, 0);
    // While a worker holds OUT, finalize waits for nobody: it refuses.
    const auto locked = run_cli("finalize " + quoted(out));
    EXPECT_EQ(locked.exit_code, 2);
    EXPECT_NE(locked.output.find("another quantsmith job"), std::string::npos) << locked.output;
    ::close(held);
  }
  const auto part0 = nlohmann::json::parse(read_text_file(out / "quantsmith-job.part-0-of-2.json"));
  const auto shard = out / part0["committed_shards"].back()["file"].get<std::string>();
  fs::resize_file(shard, 100);
  EXPECT_EQ(finalize_error(out),
            std::make_pair(std::string("finalize.shard_damaged"), shard.string()));
  EXPECT_FALSE(finalized(out));
  fs::remove(shard);
  const auto result = run_cli("finalize " + quoted(out));
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.output.find(shard.string() + ": missing; run part 0/2 again"), std::string::npos)
      << result.output;
  EXPECT_FALSE(finalized(out));

  // A damaged part job file is named.
  const auto garbled = out / "quantsmith-job.part-1-of-2.json";
  const auto kept = read_text_file(garbled);
  write_file_atomically(garbled, "{\"version\": 2, \"partition\": \"1/");
  EXPECT_EQ(finalize_error(out), std::make_pair(std::string("job.invalid"), garbled.string()));
  auto record = nlohmann::json::parse(kept);
  record["partition"] = "7/2";
  write_file_atomically(garbled, record.dump());
  EXPECT_EQ(finalize_error(out), std::make_pair(std::string("job.invalid"), garbled.string()));
  write_file_atomically(garbled, kept);

  // A single-process --force clears the parts (only the job's own files) and starts over.
  write_file_atomically(out / "notes.txt", "mine");
  const auto before = everything_in(out);
  const auto refused = run_cli(job.command(out) + " --force");
  EXPECT_EQ(refused.exit_code, 2) << refused.output;
  EXPECT_NE(refused.output.find("'notes.txt'"), std::string::npos) << refused.output;
  EXPECT_EQ(everything_in(out), before);
  fs::remove(out / "notes.txt");
  const auto over = run_cli(job.command(out) + " --force");
  ASSERT_EQ(over.exit_code, 0) << over.output;
  EXPECT_EQ(everything_in(out), single(job));

  // Finalize on a directory no partitioned job wrote; on a single-process job's, nothing to do.
  const auto empty = fresh("empty");
  fs::create_directories(empty);
  EXPECT_EQ(finalize_error(empty).first, "finalize.no_job");
  EXPECT_TRUE(finalize_partitioned_job(path("w8a16")).already_finalized);
  EXPECT_EQ(finalize_error(fresh("absent")).first, "output.missing");
}

}  // namespace
}  // namespace qs
