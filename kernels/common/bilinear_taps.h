// Source taps of half-pixel, border-clamped, non-antialiased bilinear resizing along one axis.
//
// This is edgetl.preprocess._axis_weights written once for every native kernel (C++ and CUDA). The source
// coordinate src = (o + 0.5) * n_in / n_out - 0.5 is the rational ((2o + 1) * n_in - n_out) / (2 * n_out), so it is
// evaluated in integers: the weight is then the correctly rounded float32 of the exact value, which is what the
// NumPy reference gets from float64. Computing it in float32 instead drifts by up to ~1e-4 of a pixel on wide frames.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define EDGETL_HOST_DEVICE __host__ __device__ inline
#else
#define EDGETL_HOST_DEVICE inline
#endif

namespace edgetl {

struct BilinearTap {
    int32_t i0;  // first source index
    int32_t i1;  // second source index (== i0 at the borders)
    float w1;    // weight of i1; i0 gets 1 - w1
};

EDGETL_HOST_DEVICE BilinearTap bilinear_tap(int64_t o, int64_t n_in, int64_t n_out) {
    const int64_t den = 2 * n_out;
    const int64_t num = (2 * o + 1) * n_in - n_out;
    if (num <= 0) return {0, 0, 0.0f};  // left of the first source centre: clamped
    if (num >= (n_in - 1) * den) return {int32_t(n_in - 1), int32_t(n_in - 1), 0.0f};
    const int64_t i0 = num / den;
    // rem < den < 2^24: both are exact in float32, so the quotient is correctly rounded.
    return {int32_t(i0), int32_t(i0 + 1), float(num - i0 * den) / float(den)};
}

}  // namespace edgetl
