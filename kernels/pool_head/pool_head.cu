// Fused PoolHead CUDA kernel: one block per sample. Warps pool channels (coalesced over HW) into shared memory,
// then compute one logit per warp (coalesced over a weight row), then the block does softmax and argmax.
#include <cuda_runtime.h>

#include <cfloat>

#include "cuda/edgetl_cuda.h"

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxSharedFloats = 44 * 1024 / 4;  // under the 48 KiB default (static shared needs a little)

__device__ __forceinline__ float warp_sum(float v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    return v;
}

// Block-wide max of v with the smallest index among equal maxima (np.argmax semantics).
__device__ void block_argmax(float v, int idx, float* s_val, int* s_idx, float* out_v, int* out_i) {
    for (int off = 16; off > 0; off >>= 1) {
        const float ov = __shfl_down_sync(0xffffffffu, v, off);
        const int oi = __shfl_down_sync(0xffffffffu, idx, off);
        if (ov > v || (ov == v && oi < idx)) v = ov, idx = oi;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) s_val[warp] = v, s_idx[warp] = idx;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < kWarps; ++w)
            if (s_val[w] > s_val[0] || (s_val[w] == s_val[0] && s_idx[w] < s_idx[0])) s_val[0] = s_val[w], s_idx[0] = s_idx[w];
        *out_v = s_val[0], *out_i = s_idx[0];
    }
    __syncthreads();
}

__device__ float block_sum(float v, float* s_val) {
    v = warp_sum(v);
    if ((threadIdx.x & 31) == 0) s_val[threadIdx.x >> 5] = v;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < kWarps; ++w) total += s_val[w];
    __syncthreads();
    return total;
}

__global__ void __launch_bounds__(kThreads) pool_head_kernel(const float* __restrict__ x, const float* __restrict__ weight,
                                 const float* __restrict__ bias, float* __restrict__ probs, int64_t* __restrict__ label,
                                 int64_t c, int64_t hw, int64_t k) {
    extern __shared__ float smem[];
    float* pooled = smem;      // [c]
    float* logits = smem + c;  // [k]
    __shared__ float s_val[kWarps];
    __shared__ int s_idx[kWarps];
    __shared__ float s_top;
    __shared__ int s_best;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t n = blockIdx.x;
    const float* xs = x + n * c * hw;

    for (int64_t ch = warp; ch < c; ch += kWarps) {
        float s = 0.0f;
        for (int64_t i = lane; i < hw; i += 32) s += xs[ch * hw + i];
        s = warp_sum(s);
        if (lane == 0) pooled[ch] = s / float(hw);
    }
    __syncthreads();
    for (int64_t j = warp; j < k; j += kWarps) {
        float s = 0.0f;
        for (int64_t i = lane; i < c; i += 32) s += weight[j * c + i] * pooled[i];
        s = warp_sum(s);
        if (lane == 0) logits[j] = s + bias[j];
    }
    __syncthreads();

    float v = -FLT_MAX;
    int idx = INT_MAX;
    for (int64_t j = threadIdx.x; j < k; j += kThreads)
        if (logits[j] > v) v = logits[j], idx = int(j);  // ascending j per thread: the first maximum wins
    block_argmax(v, idx, s_val, s_idx, &s_top, &s_best);
    const float top = s_top;
    float part = 0.0f;
    for (int64_t j = threadIdx.x; j < k; j += kThreads) part += expf(logits[j] - top);
    const float total = block_sum(part, s_val);
    for (int64_t j = threadIdx.x; j < k; j += kThreads) probs[n * k + j] = expf(logits[j] - top) / total;
    if (threadIdx.x == 0) label[n] = s_best;
}

}  // namespace

extern "C" int64_t edgetl_pool_head_cuda_max_width(void) { return kMaxSharedFloats; }

extern "C" int edgetl_pool_head_cuda(const float* x, const float* weight, const float* bias, float* probs,
                                     int64_t* label, int64_t n, int64_t c, int64_t hw, int64_t k, void* stream) {
    if (n <= 0 || c <= 0 || hw <= 0 || k <= 0 || n > 0x7fffffff || c + k > kMaxSharedFloats)
        return int(cudaErrorInvalidValue);
    const size_t shared = size_t(c + k) * sizeof(float);
    pool_head_kernel<<<unsigned(n), kThreads, shared, static_cast<cudaStream_t>(stream)>>>(x, weight, bias, probs,
                                                                                         label, c, hw, k);
    return int(cudaGetLastError());
}
