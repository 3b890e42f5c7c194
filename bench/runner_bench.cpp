// Benchmark: the CPU runner on a checkpoint of any family (the bundled GLM-5, the
// deepseek_v3 / qwen3_moe fixtures, or a synth checkpoint). Prefill and decode tokens/s beside the
// FLOPs a token costs (Linear weights actually used: attention, indexer, router, top-k routed
// experts, shared expert or dense MLP; plus attention over the context), the achieved GFLOP/s,
// and an OpenBLAS SGEMM of a matching size in the same run. With --device cuda the Linears run
// on cuBLAS (fp32, no TF32; the rest stays on the CPU).
//
//   qs_bench_runner MODEL_DIR [rows of heldout, default 8] [--device cpu|cuda] [--json FILE]

#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "qs/ckpt/io/checkpoint.h"
#include "qs/quant/cuda_availability.h"
#include "qs/quant/deterministic_blas.h"
#include "qs/run/evaluation.h"
#include "qs/run/language_model.h"

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Multiply-adds ×2 per token of the main model's Linears, with `context` keys attended, for
// the family's attention kind.
double flops_per_token(const qs::run::RunnerArchitecture& architecture, double context,
                       bool moe_layer) {
  const auto& d = architecture.dimensions;
  const double h = d.hidden_size, heads = d.num_attention_heads;
  double linear = 0.0, attention = 0.0;
  if (architecture.family->attention == qs::AttentionKind::Gqa) {
    const double head = d.head_dim, kv_heads = d.num_key_value_heads;
    linear = h * heads * head + 2.0 * h * kv_heads * head + heads * head * h;
    attention = heads * context * 2.0 * head;
  } else {
    const double qk = d.qk_nope_head_dim + d.qk_rope_head_dim;
    linear =
        h * d.q_lora_rank + d.q_lora_rank * heads * qk + h * (d.kv_lora_rank + d.qk_rope_head_dim) +
        d.kv_lora_rank * heads * (d.qk_nope_head_dim + d.v_head_dim) + heads * d.v_head_dim * h;
    attention = heads * context * (qk + d.v_head_dim);
    if (d.has_indexer) {
      linear += d.q_lora_rank * d.index_n_heads * d.index_head_dim + h * d.index_head_dim +
                h * d.index_n_heads;
      attention += d.index_n_heads * context * d.index_head_dim;
    }
  }
  if (moe_layer) {
    const double expert = 3.0 * h * d.moe_intermediate_size;
    linear += h * d.n_routed_experts + expert * (d.num_experts_per_tok + d.n_shared_experts);
  } else {
    linear += 3.0 * h * d.intermediate_size;
  }
  return 2.0 * (linear + attention);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> positional;
  std::string device = "cpu", json_path;
  for (int i = 1; i < argc; ++i) {
    const std::string argument = argv[i];
    if (argument == "--device" && i + 1 < argc)
      device = argv[++i];
    else if (argument == "--json" && i + 1 < argc)
      json_path = argv[++i];
    else
      positional.push_back(argument);
  }
  if (positional.empty() || (device != "cpu" && device != "cuda")) {
    fmt::print(stderr,
               "usage: qs_bench_runner MODEL_DIR [rows] [--device cpu|cuda] [--json FILE]\n");
    return 2;
  }
  if (device == "cuda" && !qs::cuda_availability().usable) {
    fmt::print(stderr, "qs_bench_runner: no GPU: {}\n", qs::cuda_availability().reason);
    return 3;
  }
  const auto checkpoint = qs::Checkpoint::open(positional[0]);
  const std::uint64_t rows =
      positional.size() > 1 ? std::strtoull(positional[1].c_str(), nullptr, 10) : 8;
  const qs::run::LanguageModel model(
      checkpoint, device == "cuda" ? qs::run::GemmDevice::Cuda : qs::run::GemmDevice::Cpu);
  const auto& d = model.architecture().dimensions;
  const auto tokens =
      qs::run::read_token_batch(checkpoint.directory() / "tokens.safetensors", "heldout", rows);

  double per_token = 0.0;
  for (std::uint64_t layer = 0; layer < d.num_hidden_layers; ++layer)
    per_token += flops_per_token(model.architecture(), tokens.seq / 2.0, d.is_moe_layer(layer));
  per_token += 2.0 * d.hidden_size * d.vocab_size;

  auto start = Clock::now();
  model.forward(tokens.ids, tokens.rows, tokens.seq);
  const double prefill = seconds_since(start);
  const double prefill_tokens = static_cast<double>(tokens.rows * tokens.seq);

  const std::vector<std::int32_t> prompt(tokens.ids.begin(), tokens.ids.begin() + 64);
  const std::uint64_t decode_steps = 64;
  start = Clock::now();
  model.generate(prompt, decode_steps);
  const double decode = seconds_since(start);
  double decode_flops = 0.0;
  for (std::uint64_t step = 0; step < decode_steps; ++step)
    for (std::uint64_t layer = 0; layer < d.num_hidden_layers; ++layer)
      decode_flops += flops_per_token(model.architecture(), 64.0 + step, d.is_moe_layer(layer));

  // A GEMM the size of the prefill's typical Linear: [tokens, hidden] × [hidden, 512].
  const int m = static_cast<int>(prefill_tokens), n = 512, k = static_cast<int>(d.hidden_size);
  std::vector<float> a(static_cast<std::size_t>(m) * k, 0.5f),
      b(static_cast<std::size_t>(n) * k, 0.25f), c(static_cast<std::size_t>(m) * n);
  double gemm = 1e30;
  for (int run = 0; run < 5; ++run) {
    start = Clock::now();
    // The runner's own GEMM path (fixed single-threaded tiles, deterministic_blas.h), which
    // also leaves OpenBLAS on one thread, so a plain cblas_sgemm here would be a 1-core one.
    qs::blas::sgemm(qs::blas::Op::None, qs::blas::Op::Transpose, m, n, k, 1.0f, a.data(), k,
                    b.data(), k, 0.0f, c.data(), n);
    gemm = std::min(gemm, seconds_since(start));
  }
  const double gemm_gflops = 2.0 * m * n * k / gemm / 1e9;
  const double prefill_gflops = per_token * prefill_tokens / prefill / 1e9;
  fmt::print(
      "runner on {} ({})\n", positional[0],
      device == "cuda" ? "Linears on cuBLAS, fp32" : "oneTBB over single-threaded OpenBLAS tiles");
  fmt::print("FLOPs per token (half-context average): {:.2f} MFLOP\n", per_token / 1e6);
  fmt::print(
      "prefill  {} x {} tokens: {:.3f} s, {:.0f} tokens/s, {:.2f} GFLOP/s ({:.2f} of SGEMM)\n",
      tokens.rows, tokens.seq, prefill, prefill_tokens / prefill, prefill_gflops,
      prefill_gflops / gemm_gflops);
  fmt::print(
      "decode   {} tokens after a 64-token prompt: {:.3f} s, {:.1f} tokens/s, {:.3f} "
      "GFLOP/s\n",
      decode_steps, decode, decode_steps / decode, decode_flops / decode / 1e9);
  fmt::print("SGEMM    [{} x {}] x [{} x {}]ᵀ: {:.2f} GFLOP/s\n", m, k, n, k, gemm_gflops);
  if (!json_path.empty()) {
    const nlohmann::ordered_json report = {{"model", positional[0]},
                                           {"device", device},
                                           {"prefill_tokens_per_s", prefill_tokens / prefill},
                                           {"prefill_gflop_per_s", prefill_gflops},
                                           {"decode_tokens_per_s", decode_steps / decode},
                                           {"cpu_sgemm_gflop_per_s", gemm_gflops}};
    std::ofstream(json_path) << report.dump(2) << "\n";
  }
  return 0;
}
