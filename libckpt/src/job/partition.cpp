#include "qs/ckpt/job/partition.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <optional>

#include "qs/ckpt/core/error.h"
#include "qs/ckpt/io/checkpoint.h"

namespace qs {
namespace {

// Cost sums times part counts overflow 64 bits on a large model: 128-bit integers, exact.
__extension__ using Wide = unsigned __int128;

// More parts than this is a typo, not a cluster.
constexpr std::size_t kMaxParts = 1'000'000;

// A plain decimal number (digits only, no sign or space), or nullopt.
std::optional<std::size_t> decimal(std::string_view text) {
  if (text.empty() || text.size() > 7) return std::nullopt;
  std::size_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// {I, N} from "<prefix>I-of-N<suffix>", or {0, 0}.
Partition partition_in_name(std::string_view name, std::string_view prefix,
                            std::string_view suffix) {
  if (!name.starts_with(prefix) || !name.ends_with(suffix)) return {0, 0};
  name.remove_prefix(prefix.size());
  name.remove_suffix(suffix.size());
  const auto separator = name.find("-of-");
  if (separator == std::string_view::npos) return {0, 0};
  const auto index = decimal(name.substr(0, separator));
  const auto count = decimal(name.substr(separator + 4));
  if (!index || !count || *count == 0 || *index >= *count) return {0, 0};
  return {*index, *count};
}

constexpr std::string_view kPartPrefix = "quantsmith-job.part-";

}  // namespace

Partition parse_partition(std::string_view text) {
  const auto slash = text.find('/');
  const auto index =
      slash == std::string_view::npos ? std::nullopt : decimal(text.substr(0, slash));
  const auto count =
      slash == std::string_view::npos ? std::nullopt : decimal(text.substr(slash + 1));
  if (!index || !count)
    throw_bad_input("cli.bad_partition",
                    fmt::format("--partition '{}': expected I/N, two whole numbers with "
                                "0 <= I < N (e.g. 0/4 ... 3/4)",
                                text));
  if (*count == 0 || *count > kMaxParts)
    throw_bad_input("cli.bad_partition",
                    fmt::format("--partition '{}': N must be between 1 and {}", text, kMaxParts));
  if (*index >= *count)
    throw_bad_input("cli.bad_partition",
                    fmt::format("--partition '{}': I must be below N (parts are numbered 0 to {})",
                                text, *count - 1));
  return {*index, *count};
}

std::string partition_label(const Partition& partition) {
  return fmt::format("{}/{}", partition.index, partition.count);
}

std::string part_job_file_name(const Partition& partition) {
  return fmt::format("{}{}-of-{}.json", kPartPrefix, partition.index, partition.count);
}

std::string part_lock_file_name(const Partition& partition) {
  return fmt::format("{}{}-of-{}.lock", kPartPrefix, partition.index, partition.count);
}

Partition partition_of_job_file(std::string_view name) {
  return partition_in_name(name, kPartPrefix, ".json");
}

Partition partition_of_lock_file(std::string_view name) {
  return partition_in_name(name, kPartPrefix, ".lock");
}

std::vector<std::uint64_t> shard_costs(const Plan& plan,
                                       const std::vector<std::vector<TensorSpec>>& shard_plan) {
  std::vector<std::size_t> shard_of_tensor;
  for (std::size_t shard = 0; shard < shard_plan.size(); ++shard)
    shard_of_tensor.insert(shard_of_tensor.end(), shard_plan[shard].size(), shard);
  std::vector<std::uint64_t> costs(shard_plan.size(), 0);
  std::size_t tensor = 0;
  for (const auto& item : plan.items) {
    const std::uint64_t cost =
        item.source_bytes() + item.output_bytes() + item.transform->extra_cost(item);
    const std::uint64_t output_bytes = item.output_bytes();
    for (const auto& output : item.outputs) {
      const auto share = output_bytes == 0
                             ? cost / item.outputs.size()
                             : static_cast<std::uint64_t>(static_cast<Wide>(cost) *
                                                          output.byte_size() / output_bytes);
      costs[shard_of_tensor[tensor++]] += share;
    }
  }
  return costs;
}

std::vector<std::size_t> assign_shards(const std::vector<std::uint64_t>& costs, std::size_t parts) {
  Wide total = 0;
  for (const auto cost : costs) total += cost;
  std::vector<std::size_t> part_of(costs.size(), 0);
  Wide before = 0;
  for (std::size_t shard = 0; shard < costs.size(); ++shard) {
    if (total == 0) {
      // Nothing to weigh by (empty tensors only): an even split by count.
      part_of[shard] = shard * parts / costs.size();
      continue;
    }
    // Twice the midpoint, to stay in integers: part k holds midpoints in [k·T/N, (k+1)·T/N).
    const Wide midpoint_twice = 2 * before + costs[shard];
    part_of[shard] = std::min<std::size_t>(
        static_cast<std::size_t>(midpoint_twice * parts / (2 * total)), parts - 1);
    before += costs[shard];
  }
  return part_of;
}

PartShare part_share(const Plan& plan, std::uint64_t max_shard_bytes, const Partition& partition) {
  // The shard plan exactly as the executor makes it.
  auto shard_plan = split_into_shards(plan.output_specs(), max_shard_bytes);
  if (shard_plan.empty()) shard_plan.emplace_back();
  const auto costs = shard_costs(plan, shard_plan);
  const auto part_of = assign_shards(costs, partition.count);
  PartShare share;
  share.total_shards = shard_plan.size();
  share.first_shard = shard_plan.size();
  for (std::size_t shard = 0; shard < shard_plan.size(); ++shard) {
    std::uint64_t bytes = 0;
    for (const auto& tensor : shard_plan[shard]) bytes += tensor.byte_size();
    share.total_output_bytes += bytes;
    share.total_cost += costs[shard];
    if (part_of[shard] != partition.index) continue;
    share.first_shard = std::min(share.first_shard, shard);
    ++share.shards;
    share.output_bytes += bytes;
    share.cost += costs[shard];
  }
  return share;
}

}  // namespace qs
