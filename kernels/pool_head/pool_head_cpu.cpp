#include "pool_head/pool_head_cpu.h"

#include <cmath>

namespace edgetl {

namespace {

// Eight independent partial sums: vectorizes without -ffast-math (a single running sum is a serial dependency).
float sum8(const float* __restrict a, int64_t len) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= len; i += 8)
        for (int j = 0; j < 8; ++j) acc[j] += a[i + j];
    float total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < len; ++i) total += a[i];
    return total;
}

float dot8(const float* __restrict a, const float* __restrict b, int64_t len) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= len; i += 8)
        for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
    float total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < len; ++i) total += a[i] * b[i];
    return total;
}

}  // namespace

void pool_rows(const float* x, int64_t hw, int64_t count, float* pooled) {
    const float denom = float(hw);
    for (int64_t i = 0; i < count; ++i) pooled[i] = sum8(x + i * hw, hw) / denom;
}

void dense_softmax_argmax(const float* pooled, const float* weight, const float* bias, int64_t c, int64_t k,
                          float* logits, float* probs, int64_t* label) {
    int64_t best = 0;
    for (int64_t j = 0; j < k; ++j) {
        logits[j] = dot8(weight + j * c, pooled, c) + bias[j];
        if (logits[j] > logits[best]) best = j;  // strict: ties keep the first index, like np.argmax
    }
    const float top = logits[best];
    float total = 0.0f;
    for (int64_t j = 0; j < k; ++j) total += (probs[j] = std::exp(logits[j] - top));
    for (int64_t j = 0; j < k; ++j) probs[j] /= total;
    *label = best;
}

}  // namespace edgetl
