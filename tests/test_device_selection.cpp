// --device for quantize: every form, on machines with no, one and several GPUs (described, not
// needed: parsing touches no device), and the malformed or impossible lists refused with the
// kind the CLI reports.

#include <gtest/gtest.h>

#include "qs/ckpt/core/error.h"
#include "qs/quant/device_selection.h"
#include "test_support.h"

namespace qs {
namespace {

using testing::error_kind_of;

const CudaAvailability kNoGpu{false, 0, "no CUDA device present", {}};
const CudaAvailability kFourGpus{
    true, 4, "NVIDIA H100", {"NVIDIA H100", "NVIDIA H100", "NVIDIA H100", "NVIDIA H100"}};
const CudaAvailability kMixedGpus{true, 2, "NVIDIA H100", {"NVIDIA H100", "NVIDIA A100"}};

TEST(DeviceSelection, CpuForms) {
  for (const auto* cuda : {&kNoGpu, &kFourGpus}) {
    const auto cpu = parse_device_selection("cpu", *cuda);
    EXPECT_EQ(cpu.device, ComputeDevice::Cpu);
    EXPECT_EQ(cpu.worker_count(), 1u);
    EXPECT_EQ(cpu.describe(), "cpu");
    const auto four = parse_device_selection("cpu:4", *cuda);
    EXPECT_EQ(four.device, ComputeDevice::Cpu);
    EXPECT_EQ(four.worker_count(), 4u);
    EXPECT_EQ(four.describe(), "cpu:4");
    EXPECT_EQ(parse_device_selection("cpu:1", *cuda).describe(), "cpu");
  }
}

TEST(DeviceSelection, AutoIsTheFirstGpuElseTheCpu) {
  EXPECT_EQ(parse_device_selection("auto", kNoGpu).describe(), "cpu");
  const auto gpu = parse_device_selection("auto", kFourGpus);
  EXPECT_EQ(gpu.device, ComputeDevice::Cuda);
  EXPECT_EQ(gpu.describe(), "cuda:0");
  EXPECT_EQ(gpu.worker_count(), 1u);
}

TEST(DeviceSelection, CudaListsAndAll) {
  EXPECT_EQ(parse_device_selection("cuda", kFourGpus).cuda_devices, std::vector<int>{0});
  EXPECT_EQ(parse_device_selection("cuda:2", kFourGpus).cuda_devices, std::vector<int>{2});
  const auto listed = parse_device_selection("cuda:3,0,1", kFourGpus);
  EXPECT_EQ(listed.cuda_devices, (std::vector<int>{3, 0, 1}));  // workers in the listed order
  EXPECT_EQ(listed.worker_count(), 3u);
  EXPECT_EQ(listed.describe(), "cuda:3,0,1");
  const auto all = parse_device_selection("cuda:all", kFourGpus);
  EXPECT_EQ(all.cuda_devices, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(all.describe(), "cuda:0,1,2,3");
}

TEST(DeviceSelection, MalformedTextIsRefusedOnAnyMachine) {
  for (const auto* cuda : {&kNoGpu, &kFourGpus})
    for (const char* text :
         {"",           "gpu",       "CPU",       "cpu:",     "cpu:0",   "cpu:-2",
          "cpu:x",      "cpu:4x",    "cpu:99999", "cpu:2,3",  "cuda:",   "cuda:,1",
          "cuda:0,",    "cuda:0,,1", "cuda:-1",   "cuda:1.5", "cuda: 1", "cuda:0,0",
          "cuda:1,2,1", "cuda:All",  "cuda0",     "cudaa",    "cuda:0;1"})
      EXPECT_EQ(error_kind_of([&] { parse_device_selection(text, *cuda); }), "cli.bad_device")
          << "'" << text << "'";
}

TEST(DeviceSelection, GpusTheMachineLacksAreRefused) {
  for (const char* text : {"cuda", "cuda:0", "cuda:0,1", "cuda:all"})
    EXPECT_EQ(error_kind_of([&] { parse_device_selection(text, kNoGpu); }), "cuda.unavailable")
        << text;
  for (const char* text : {"cuda:4", "cuda:0,4", "cuda:123456"})
    EXPECT_EQ(error_kind_of([&] { parse_device_selection(text, kFourGpus); }), "device.not_found")
        << text;
  try {
    parse_device_selection("cuda:1,7", kFourGpus);
    ADD_FAILURE() << "accepted cuda:7";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("cuda:7 does not exist"), std::string::npos)
        << error.what();
    EXPECT_NE(std::string(error.what()).find("4 CUDA device(s)"), std::string::npos)
        << error.what();
  }
}

TEST(DeviceSelection, GpusOfDifferentModelsAreNotMixed) {
  EXPECT_EQ(error_kind_of([&] { parse_device_selection("cuda:0,1", kMixedGpus); }),
            "device.mixed_models");
  EXPECT_EQ(error_kind_of([&] { parse_device_selection("cuda:all", kMixedGpus); }),
            "device.mixed_models");
  EXPECT_EQ(parse_device_selection("cuda:1", kMixedGpus).describe(), "cuda:1");
}

}  // namespace
}  // namespace qs
