// Built with -ffp-contract=off: every product and sum is rounded exactly where NumPy rounds it, so the kernel
// matches edgetl.preprocess bit for bit (vertical blend, then horizontal blend, then scale and bias).
#include "preprocess/preprocess_cpu.h"

namespace edgetl {

PreprocessTables::PreprocessTables(const PreprocessShape& s)
    : rows(s.h_out), col0(s.w_out), col1(s.w_out), wx0(s.w_out), wx1(s.w_out) {
    for (int64_t y = 0; y < s.h_out; ++y) rows[y] = bilinear_tap(y, s.h_in, s.h_out);
    for (int64_t x = 0; x < s.w_out; ++x) {
        const BilinearTap t = bilinear_tap(x, s.w_in, s.w_out);
        col0[x] = 3 * t.i0;
        col1[x] = 3 * t.i1;
        wx0[x] = 1.0f - t.w1;
        wx1[x] = t.w1;
    }
}

namespace {

#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
#define EDGETL_CPU_CLONES __attribute__((target_clones("default", "avx2", "arch=skylake-avx512")))
#else
#define EDGETL_CPU_CLONES
#endif

// One output row of one channel. Kept free of aliasing and branches so the compiler vectorizes the arithmetic
// (the byte loads are gathers); target_clones adds AVX2 / AVX-512 variants picked at load time.
EDGETL_CPU_CLONES void blend_row(
    const uint8_t* __restrict r0, const uint8_t* __restrict r1, float wy0, float wy1,
    const int32_t* __restrict c0, const int32_t* __restrict c1, const float* __restrict wx0,
    const float* __restrict wx1, float scale, float bias, int64_t w_out, float* __restrict out) {
    for (int64_t x = 0; x < w_out; ++x) {
        const float left = float(r0[c0[x]]) * wy0 + float(r1[c0[x]]) * wy1;
        const float right = float(r0[c1[x]]) * wy0 + float(r1[c1[x]]) * wy1;
        out[x] = (left * wx0[x] + right * wx1[x]) * scale + bias;
    }
}

}  // namespace

void preprocess_rows(const uint8_t* frames, float* out, const PreprocessShape& s, const PreprocessParams& p,
                     const PreprocessTables& t, int64_t begin, int64_t end) {
    const int64_t row_bytes = s.w_in * 3;
    const int64_t plane = s.h_out * s.w_out;
    for (int64_t r = begin; r < end; ++r) {
        const int64_t n = r / s.h_out, y = r % s.h_out;
        const BilinearTap ty = t.rows[y];
        const uint8_t* frame = frames + n * s.h_in * row_bytes;
        const float wy1 = ty.w1, wy0 = 1.0f - ty.w1;
        for (int c = 0; c < 3; ++c) {
            const int32_t ci = p.channels[c];
            float* dst = out + (n * 3 + c) * plane + y * s.w_out;
            blend_row(frame + ty.i0 * row_bytes + ci, frame + ty.i1 * row_bytes + ci, wy0, wy1, t.col0.data(),
                      t.col1.data(), t.wx0.data(), t.wx1.data(), p.scale[c], p.bias[c], s.w_out, dst);
        }
    }
}

}  // namespace edgetl
