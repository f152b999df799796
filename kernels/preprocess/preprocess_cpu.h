// Fused Preprocess CPU kernel: uint8 NHWC frame -> bilinear resize -> x * scale + bias -> float32 NCHW, one pass.
#pragma once

#include <cstdint>
#include <vector>

#include "common/bilinear_taps.h"

namespace edgetl {

struct PreprocessShape {
    int64_t n, h_in, w_in, h_out, w_out;
};

struct PreprocessParams {
    float scale[3];       // per output channel
    float bias[3];        // per output channel
    int32_t channels[3];  // input channel read for each output channel: {0,1,2} (RGB) or {2,1,0} (BGR)
};

// Per-call tables: O(h_out + w_out), negligible next to the O(h_out * w_out) pass they make gather-only.
struct PreprocessTables {
    std::vector<BilinearTap> rows;   // per output row
    std::vector<int32_t> col0, col1;  // per output column: byte offset of the two source pixels in a row
    std::vector<float> wx0, wx1;      // per output column: weights of col0 / col1
    PreprocessTables(const PreprocessShape& s);
};

// Computes output rows [begin, end) of the flattened (n, y) row index: independent rows, so callers parallelize.
void preprocess_rows(const uint8_t* frames, float* out, const PreprocessShape& s, const PreprocessParams& p,
                     const PreprocessTables& t, int64_t begin, int64_t end);

}  // namespace edgetl
