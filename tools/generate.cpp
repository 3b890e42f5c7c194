// quantsmith generate MODEL (--prompt TEXT | --tokens F[:TENSOR[:ROW]]): greedy continuation with
// the runner's KV cache. The bundled model is byte-level: a prompt is BOS then its bytes.

#include <fmt/format.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli_support.h"
#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/checkpoint.h"
#include "qs/run/evaluation.h"
#include "qs/run/language_model.h"

namespace qs::cli {
namespace {

struct GenerateOptions {
  std::string model;
  std::string prompt;
  std::string tokens;
  std::uint64_t row = 0;
  std::uint64_t max_new = 64;
  bool json = false;
  std::string device = "auto";
};

constexpr std::int32_t kByteVocabulary = 256;

// Byte tokens print as text; others (BOS, EOS, ...) as <id>.
std::string render(const std::vector<std::int32_t>& tokens) {
  std::string text;
  for (std::int32_t token : tokens) {
    if (token >= 0 && token < kByteVocabulary)
      text += static_cast<char>(token);
    else
      text += fmt::format("<{}>", token);
  }
  return text;
}

}  // namespace

SubcommandRunner register_generate(CLI::App& app) {
  auto options = std::make_shared<GenerateOptions>();
  auto* command = app.add_subcommand(
      "generate",
      "Greedy continuation of a prompt with the KV cache (byte-level prompts: BOS + "
      "UTF-8 bytes).");
  command->add_option("model", options->model, "checkpoint (any format we read)")->required();
  command->add_option("--prompt", options->prompt, "text; tokens are BOS then its bytes");
  command->add_option("--tokens", options->tokens,
                      "safetensors file of token ids, optionally FILE:TENSOR (one row, --row)");
  command->add_option("--row", options->row, "which row of --tokens (default 0)");
  command->add_option("--max-new", options->max_new, "tokens to generate (default 64)");
  command->add_flag("--json", options->json, "machine-readable output");
  command->add_option("--device", options->device, "auto (GPU when usable), cpu or cuda");
  return [options]() {
    const auto checkpoint = Checkpoint::open(options->model);
    const run::LanguageModel model(checkpoint, runner_uses_cuda(options->device)
                                                   ? run::GemmDevice::Cuda
                                                   : run::GemmDevice::Cpu);
    std::vector<std::int32_t> prompt;
    if (options->prompt.empty() == options->tokens.empty())
      throw_bad_input("cli.prompt_or_tokens", "give exactly one of --prompt TEXT or --tokens F");
    if (!options->tokens.empty()) {
      const auto batch = run::read_tokens_argument(options->tokens, "", 0);
      if (options->row >= batch.rows)
        throw_bad_input("cli.bad_row", fmt::format("--row {} but the tokens have {} rows",
                                                   options->row, batch.rows));
      prompt.assign(batch.ids.begin() + options->row * batch.seq,
                    batch.ids.begin() + (options->row + 1) * batch.seq);
    } else {
      const auto& config = checkpoint.config();
      if (config.contains("bos_token_id") && config["bos_token_id"].is_number_integer())
        prompt.push_back(config["bos_token_id"].get<std::int32_t>());
      for (unsigned char byte : options->prompt) prompt.push_back(byte);
    }
    // Stops at the (first) EOS id of config.json, when there is one.
    std::optional<std::int32_t> stop;
    const auto eos = checkpoint.config().value("eos_token_id", nlohmann::json());
    if (eos.is_number_integer()) stop = eos.get<std::int32_t>();
    if (eos.is_array() && !eos.empty() && eos[0].is_number_integer())
      stop = eos[0].get<std::int32_t>();
    const auto start = std::chrono::steady_clock::now();
    const auto generated = model.generate(prompt, options->max_new, stop);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (options->json) {
      nlohmann::ordered_json out;
      out["prompt"] = prompt;
      out["tokens"] = generated;
      out["text"] = render(generated);
      out["seconds"] = seconds;
      out["tokens_per_second"] = generated.size() / std::max(seconds, 1e-9);
      // Byte tokens need not form UTF-8 (random or quantized models): invalid bytes print as
      // U+FFFD in the JSON text; "tokens" holds the ids exactly.
      fmt::print("{}\n", out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace));
    } else {
      fmt::print("{}\n", render(prompt) + render(generated));
      fmt::print(stderr, "{} tokens in {:.2f} s ({:.1f} tokens/s, prompt {} tokens)\n",
                 generated.size(), seconds, generated.size() / std::max(seconds, 1e-9),
                 prompt.size());
    }
    return kExitOk;
  };
}

}  // namespace qs::cli
