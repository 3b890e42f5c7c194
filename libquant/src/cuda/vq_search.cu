// The CUDA codeword searches: one thread per vector; the block walks the codebook in chunks
// staged in shared memory (any K fits), and each thread offers the chunk's codewords in index
// order through vq_search_core.h, whose _rn intrinsics keep the device arithmetic identical to
// the host's. The per-codeword terms come from the host (detail::codeword_terms), so the codes
// equal the reference's bit for bit.

#include <cuda_runtime_api.h>

#include <vector>

#include "../vq_detail.h"
#include "../vq_search_core.h"
#include "device_buffer.h"

namespace qs::vq::detail {
namespace {

using qs::cuda::check;
using qs::cuda::DeviceBuffer;

constexpr int kThreads = 128;
constexpr std::uint32_t kSharedFloats = 48 * 1024 / sizeof(float);

std::uint32_t chunk_codes(std::uint32_t d) { return kSharedFloats / (d + 1); }

__global__ void nearest_kernel(const float* vectors, std::uint64_t count, const float* codewords,
                               const float* terms, std::uint32_t k, std::uint32_t d,
                               std::uint32_t chunk, const float* metric, std::uint32_t* codes) {
  extern __shared__ float shared[];
  float* chunk_codewords = shared;
  float* chunk_terms = shared + static_cast<std::uint64_t>(chunk) * d;
  const std::uint64_t i = static_cast<std::uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool active = i < count;
  float projected[core::kMaxDimension];
  if (active) core::project(metric, vectors + i * d, d, projected);
  core::NearestCode best;
  for (std::uint32_t start = 0; start < k; start += chunk) {
    const std::uint32_t size = min(chunk, k - start);
    __syncthreads();
    for (std::uint32_t v = threadIdx.x; v < size * d; v += blockDim.x)
      chunk_codewords[v] = codewords[static_cast<std::uint64_t>(start) * d + v];
    for (std::uint32_t v = threadIdx.x; v < size; v += blockDim.x) chunk_terms[v] = terms[start + v];
    __syncthreads();
    if (!active) continue;
    for (std::uint32_t c = 0; c < size; ++c)
      best.offer(core::codeword_cost(chunk_terms[c], chunk_codewords + c * d, projected, d),
                 start + c);
  }
  if (active) codes[i] = best.code();
}

__global__ void assign_kernel(const float* points, const float* weights, std::uint64_t count,
                              const float* centroids, std::uint32_t k, std::uint32_t d,
                              std::uint32_t chunk, std::uint32_t* codes, float* distances) {
  extern __shared__ float shared[];
  const std::uint64_t i = static_cast<std::uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool active = i < count;
  core::NearestCode best;
  for (std::uint32_t start = 0; start < k; start += chunk) {
    const std::uint32_t size = min(chunk, k - start);
    __syncthreads();
    for (std::uint32_t v = threadIdx.x; v < size * d; v += blockDim.x)
      shared[v] = centroids[static_cast<std::uint64_t>(start) * d + v];
    __syncthreads();
    if (!active) continue;
    const float* x = points + i * d;
    const float* w = weights ? weights + i * d : nullptr;
    for (std::uint32_t c = 0; c < size; ++c)
      best.offer(core::weighted_distance(x, w, shared + c * d, d), start + c);
  }
  if (!active) return;
  codes[i] = best.code();
  if (distances) distances[i] = best.cost;
}

unsigned grid_for(std::uint64_t count) {
  return static_cast<unsigned>((count + kThreads - 1) / kThreads);
}

// A device copy of `values` (DeviceBuffer is neither copyable nor movable, so the caller
// constructs it and this fills it).
void upload(DeviceBuffer<float>& buffer, std::span<const float> values) {
  buffer.upload(values.data(), values.size_bytes());
}

}  // namespace

void nearest_codewords_cuda(std::span<const float> vectors, std::uint64_t count,
                            const Codebook& codebook, std::span<const float> metric,
                            std::span<const float> terms, std::span<std::uint32_t> codes) {
  const std::uint32_t d = codebook.tier.d, chunk = chunk_codes(d);
  DeviceBuffer<float> device_vectors(vectors.size());
  upload(device_vectors, vectors);
  DeviceBuffer<float> device_codewords(codebook.codewords.size());
  upload(device_codewords, codebook.codewords);
  DeviceBuffer<float> device_terms(terms.size());
  upload(device_terms, terms);
  DeviceBuffer<float> device_metric(metric.size());
  upload(device_metric, metric);
  DeviceBuffer<std::uint32_t> device_codes(count);
  nearest_kernel<<<grid_for(count), kThreads, (chunk * (d + 1)) * sizeof(float)>>>(
      device_vectors.data, count, device_codewords.data, device_terms.data, codebook.tier.k, d,
      chunk, metric.empty() ? nullptr : device_metric.data, device_codes.data);
  check(cudaGetLastError(), "nearest codeword kernel");
  device_codes.download(codes.data(), codes.size_bytes());
}

void assign_weighted_cuda(std::span<const float> points, std::span<const float> weights,
                          std::uint64_t count, const Centroids& centroids,
                          std::span<std::uint32_t> codes, std::span<float> distances) {
  const std::uint32_t d = centroids.d, chunk = kSharedFloats / d;
  DeviceBuffer<float> device_points(points.size());
  upload(device_points, points);
  DeviceBuffer<float> device_weights(weights.size());
  upload(device_weights, weights);
  DeviceBuffer<float> device_centroids(centroids.values.size());
  upload(device_centroids, centroids.values);
  DeviceBuffer<std::uint32_t> device_codes(count);
  DeviceBuffer<float> device_distances(distances.empty() ? 0 : count);
  assign_kernel<<<grid_for(count), kThreads, chunk * d * sizeof(float)>>>(
      device_points.data, weights.empty() ? nullptr : device_weights.data, count,
      device_centroids.data, centroids.k, d, chunk, device_codes.data,
      distances.empty() ? nullptr : device_distances.data);
  check(cudaGetLastError(), "k-means assignment kernel");
  device_codes.download(codes.data(), codes.size_bytes());
  if (!distances.empty()) device_distances.download(distances.data(), distances.size_bytes());
}

}  // namespace qs::vq::detail
