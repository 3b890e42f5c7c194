// The report of scripts/gpu_check.sh: reads what its steps left in one directory and writes
// report.json and report.txt there, every figure beside the GPU's name and the device-to-device
// copy bandwidth measured in the same run (so figures from different machines compare).
//
//   qs_gpu_check_report DIR
//
// DIR holds, each optional (a step that failed or timed out left nothing, and the report says
// "not run"): gpu.txt (nvidia-smi's name, memory, driver), steps.tsv (step, status, seconds,
// note), tests.tsv (test, result), kernels.json (qs_bench_gpu), gptq.json (qs_bench_gptq),
// runner_cuda.json and runner_cpu.json (qs_bench_runner), quantize_cuda.json and
// quantize_cpu.json (quantsmith quantize --json), quantize_source.tsv (bytes, cat seconds).
// Exit 0 when every step passed, 1 otherwise.

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The file's JSON, or null when it is absent or not JSON (a step killed mid-write).
Json read_json(const fs::path& path) {
  if (!fs::exists(path)) return nullptr;
  const auto parsed = Json::parse(read_text(path), nullptr, false);
  return parsed.is_discarded() ? Json(nullptr) : parsed;
}

std::vector<std::vector<std::string>> read_tsv(const fs::path& path) {
  std::vector<std::vector<std::string>> rows;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    std::vector<std::string> fields;
    std::stringstream stream(line);
    for (std::string field; std::getline(stream, field, '\t');) fields.push_back(field);
    rows.push_back(std::move(fields));
  }
  return rows;
}

double number(const Json& json, const char* key) {
  return json.is_object() && json.contains(key) && json[key].is_number() ? json[key].get<double>()
                                                                         : 0.0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    fmt::print(stderr, "usage: qs_gpu_check_report DIR\n");
    return 2;
  }
  const fs::path dir = argv[1];
  std::string gpu = read_text(dir / "gpu.txt");
  while (!gpu.empty() && (gpu.back() == '\n' || gpu.back() == ' ')) gpu.pop_back();
  const Json kernels = read_json(dir / "kernels.json");
  const double d2d =
      kernels.is_object() ? number(kernels["copy_gb_per_s"], "device_to_device") : 0.0;

  Json report;
  report["gpu"] = gpu.empty() ? Json(nullptr) : Json(gpu);
  report["device_to_device_gb_per_s"] = d2d > 0 ? Json(d2d) : Json(nullptr);
  std::string text =
      fmt::format("quantsmith GPU check on {}\n", gpu.empty() ? "(unknown GPU)" : gpu);
  text += d2d > 0
              ? fmt::format("device-to-device copy: {:.1f} GB/s (beside every figure below)\n", d2d)
              : "device-to-device copy: not measured\n";

  bool all_passed = true;
  // Built apart and put in at the end: a reference into an ordered_json object does not
  // survive the next key added to it.
  Json steps = Json::array();
  text += "\nsteps:\n";
  for (const auto& row : read_tsv(dir / "steps.tsv")) {
    if (row.size() < 3) continue;
    const std::string note = row.size() > 3 ? row[3] : "";
    steps.push_back(
        {{"step", row[0]}, {"status", row[1]}, {"seconds", std::stod(row[2])}, {"note", note}});
    all_passed = all_passed && row[1] == "ok";
    text += fmt::format("  {:<16} {:<8} {:>7.1f} s  {}\n", row[0], row[1], std::stod(row[2]), note);
  }
  if (steps.empty()) all_passed = false;
  report["steps"] = steps;

  std::map<std::string, int> results;
  std::vector<std::string> failed_tests;
  for (const auto& row : read_tsv(dir / "tests.tsv")) {
    if (row.size() < 2) continue;
    ++results[row[1]];
    if (row[1] != "Passed" && row[1] != "Skipped") failed_tests.push_back(row[0]);
  }
  Json counts = Json::object();
  for (const auto& [result, count] : results) counts[result] = count;
  report["tests"] = {{"counts", counts}, {"failed", failed_tests}};
  text += "\nCUDA tests:";
  for (const auto& [result, count] : results) text += fmt::format(" {} {}", count, result);
  text += results.empty() ? " not run\n" : "\n";
  for (const auto& name : failed_tests) text += fmt::format("  failed: {}\n", name);

  const auto beside = [&](Json figure) {
    figure["gpu"] = report["gpu"];
    figure["device_to_device_gb_per_s"] = report["device_to_device_gb_per_s"];
    return figure;
  };

  text += "\nkernels (host buffers in and out, as quantsmith calls them):\n";
  if (kernels.is_object()) {
    const auto& copies = kernels["copy_gb_per_s"];
    text += fmt::format("  copies: D2D {:.1f} GB/s, H2D {:.1f} GB/s, D2H {:.1f} GB/s (pageable)\n",
                        number(copies, "device_to_device"), number(copies, "host_to_device"),
                        number(copies, "device_to_host"));
    for (const auto& kernel : kernels["kernels"]) {
      report["kernels"].push_back(beside(kernel));
      text +=
          fmt::format("  {:<20} {:>8.2f} GB/s in, {:.3f} of D2D, {:.2f} of the call is transfer\n",
                      kernel["name"].get<std::string>(), number(kernel, "gb_per_s_in"),
                      number(kernel, "vs_device_to_device"), number(kernel, "transfer_share"));
    }
    report["copies"] = beside(copies);
  } else {
    text += "  not run\n";
  }

  const Json gptq = read_json(dir / "gptq.json");
  text += "\nGPTQ, one GLM-5 expert:\n";
  if (gptq.is_object()) {
    report["gptq"] = beside(gptq);
    text += fmt::format(
        "  [{} x {}], {} tokens, {}: prepare {:.3f} s, sweep {:.3f} s, relative loss "
        "{:.3e}\n",
        number(gptq, "rows"), number(gptq, "cols"), number(gptq, "tokens"),
        gptq.value("backend", "?"), number(gptq, "prepare_s"), number(gptq, "sweep_s"),
        number(gptq, "relative_loss"));
  } else {
    text += "  not run\n";
  }

  text += "\nrunner on the bundled model:\n";
  for (const char* device : {"cuda", "cpu"}) {
    const Json runner = read_json(dir / fmt::format("runner_{}.json", device));
    if (!runner.is_object()) {
      text += fmt::format("  {}: not run\n", device);
      continue;
    }
    report["runner"][device] = beside(runner);
    text +=
        fmt::format("  {:<4}: prefill {:.0f} tokens/s ({:.2f} GFLOP/s), decode {:.1f} tokens/s\n",
                    device, number(runner, "prefill_tokens_per_s"),
                    number(runner, "prefill_gflop_per_s"), number(runner, "decode_tokens_per_s"));
  }

  text += "\nquantize end to end (synthetic checkpoint in /dev/shm, --scheme nvfp4):\n";
  const auto source = read_tsv(dir / "quantize_source.tsv");
  if (!source.empty() && source[0].size() >= 2) {
    const double bytes = std::stod(source[0][0]), cat_s = std::stod(source[0][1]);
    report["quantize"]["source_bytes"] = bytes;
    report["quantize"]["cat_gb_per_s"] = cat_s > 0 ? bytes / 1e9 / cat_s : 0.0;
    text += fmt::format("  source {:.2f} GB, cat > /dev/null {:.2f} GB/s\n", bytes / 1e9,
                        cat_s > 0 ? bytes / 1e9 / cat_s : 0.0);
  }
  for (const char* device : {"cuda", "cpu"}) {
    const Json run = read_json(dir / fmt::format("quantize_{}.json", device));
    if (!run.is_object() || !run.contains("run")) {
      text += fmt::format("  {}: not run\n", device);
      continue;
    }
    report["quantize"][device] = beside(run["run"]);
    text += fmt::format("  {:<4}: {:.2f} s, {:.2f} GB/s read, mean weight SNR {:.2f} dB\n", device,
                        number(run["run"], "seconds"), number(run["run"], "gb_per_s"),
                        number(run["run"], "mean_snr_db"));
  }
  report["passed"] = all_passed;
  text += fmt::format("\nresult: {}\n", all_passed ? "every step passed" : "SOME STEPS FAILED");

  std::ofstream(dir / "report.json") << report.dump(2) << "\n";
  std::ofstream(dir / "report.txt") << text;
  fmt::print("{}", text);
  return all_passed ? 0 : 1;
}
