// `quantsmith quantize --device` with several workers on the bundled model: four CPU workers
// write the same bytes as one for NVFP4, INT8, INT4 and GPTQ (the scheduling a multi-GPU job
// uses, tested where there is no GPU); with GPUs, all of them write what one writes. A device
// list that is malformed or names a device the machine lacks fails before anything is written.

#include <gtest/gtest.h>

#include <algorithm>

#include "qs/quant/cuda_availability.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::directory_contents;
using testing::quoted;
using testing::run_cli;
using testing::ScratchDirectory;

const std::filesystem::path kModel = testing::bundled_model();

// The calibration statistics GPTQ needs, made once per test.
std::filesystem::path calibrate(const std::filesystem::path& directory) {
  const auto stats = directory / "stats.qs";
  auto result =
      run_cli("calibrate " + quoted(kModel) + " --tokens " + quoted(kModel / "tokens.safetensors") +
              ":calib --max-rows 8 " + "--all-experts --device cpu --out " + quoted(stats));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  return stats;
}

// Quantizes the bundled model with `arguments` on `device`, small shards so that several are
// written; returns the output directory's files.
std::map<std::string, std::string> quantize(const std::filesystem::path& out,
                                            const std::string& arguments,
                                            const std::string& device) {
  auto result = run_cli("quantize " + quoted(kModel) + " " + quoted(out) + " " + arguments +
                        " --device " + device + " --max-shard-size 2MB --max-buffer 4MiB");
  EXPECT_EQ(result.exit_code, 0) << device << ": " << result.output;
  return directory_contents(out);
}

// Each scheme quantized on `one` device and on `several`: the checkpoints must be the same
// bytes (GPTQ from statistics calibrated once, on the CPU).
void expect_same_checkpoints(const std::filesystem::path& directory,
                             const std::vector<std::string>& schemes, const std::string& one,
                             const std::string& several) {
  const auto stats = calibrate(directory);
  for (const auto& scheme : schemes) {
    const std::string arguments =
        "--scheme " + scheme + (scheme.starts_with("gptq") ? " --calib " + quoted(stats) : "");
    const auto single = quantize(directory / (scheme + "-one"), arguments, one);
    ASSERT_GT(single.size(), 3u) << scheme;
    EXPECT_EQ(quantize(directory / (scheme + "-several"), arguments, several), single) << scheme;
  }
}

TEST(MultiDeviceCli, FourCpuWorkersWriteWhatOneWrites) {
  ScratchDirectory scratch("multidevice-cpu");
  expect_same_checkpoints(scratch.path(), {"nvfp4", "int8", "int4", "gptq-int4"}, "cpu", "cpu:4");
}

TEST(MultiDeviceCli, AJobResumesOnAnotherWorkerCount) {
  ScratchDirectory scratch("multidevice-resume");
  const auto whole = quantize(scratch.path() / "whole", "--scheme int4", "cpu");
  // Stopped by a write limit below the shard size (as on a full disk, test_quantize_cli),
  // resumed with three workers.
  const auto out = scratch.path() / "resumed";
  auto failed = testing::run_cli_after(
      "trap '' XFSZ; ulimit -f 1500;",
      "quantize " + quoted(kModel) + " " + quoted(out) +
          " --scheme int4 --device cpu:2 --max-shard-size 2MB --max-buffer 4MiB");
  ASSERT_EQ(failed.exit_code, 1) << failed.output;
  auto resumed = run_cli("quantize " + quoted(kModel) + " " + quoted(out) +
                         " --scheme int4 --device cpu:3 --max-shard-size 2MB --max-buffer 4MiB "
                         "--resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_EQ(directory_contents(out), whole);
}

TEST(MultiDeviceCli, CudaAllWritesWhatCudaZeroWrites) {
  const auto cuda = cuda_availability();
  if (!cuda.usable) GTEST_SKIP() << "no CUDA device: " << cuda.reason;
  ScratchDirectory scratch("multidevice-cuda");
  expect_same_checkpoints(scratch.path(), {"nvfp4", "int4", "gptq-int4"}, "cuda:0", "cuda:all");
}

TEST(MultiDeviceCli, BadDeviceListsFailBeforeAnythingIsWritten) {
  ScratchDirectory scratch("multidevice-bad");
  const auto cuda = cuda_availability();
  struct Case {
    std::string device;
    std::string says;  // what the one error line holds
  };
  const std::vector<Case> cases = {
      {"cuda:0,,1", "'' is not a device index"},
      {"cpu:0", "cpu:N needs a worker count"},
      {"cuda:1,1", "device 1 is listed twice"},
      {"tpu:0", "no such device"},
      {"cuda:" + std::to_string(cuda.device_count), cuda.usable ? "does not exist" : cuda.reason},
  };
  for (const auto& c : cases) {
    const auto out = scratch.path() / "out";
    auto result = run_cli("quantize " + quoted(kModel) + " " + quoted(out) +
                          " --scheme nvfp4 --device '" + c.device + "'");
    EXPECT_EQ(result.exit_code, 2) << c.device << ": " << result.output;
    EXPECT_NE(result.output.find(c.says), std::string::npos) << c.device << ": " << result.output;
    EXPECT_EQ(std::count(result.output.begin(), result.output.end(), '\n'), 1) << result.output;
    EXPECT_FALSE(std::filesystem::exists(out)) << c.device;
  }
}

}  // namespace
}  // namespace qs
