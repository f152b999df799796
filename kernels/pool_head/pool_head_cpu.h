// Fused PoolHead CPU kernel: feature map [N, C, H, W] -> global average pool -> dense [K, C] -> softmax + argmax.
#pragma once

#include <cstdint>

namespace edgetl {

struct PoolHeadShape {
    int64_t n, c, hw, k;
};

// Mean over the hw contiguous values of each of `count` rows: pooled[i] = mean(x[i * hw : (i + 1) * hw]).
void pool_rows(const float* x, int64_t hw, int64_t count, float* pooled);

// One sample: logits = weight @ pooled + bias, then probs = softmax(logits), label = first argmax(logits).
// `logits` is caller-provided scratch of k floats.
void dense_softmax_argmax(const float* pooled, const float* weight, const float* bias, int64_t c, int64_t k,
                          float* logits, float* probs, int64_t* label);

}  // namespace edgetl
