/* Plain C ABI of edgetl's CUDA kernels (libedgetl_cuda.so): loadable with ctypes, callable from the TensorRT
 * plugins. All pointers are device pointers except scale/bias/channels (3 host values each, passed by value to
 * the kernel). Every call is asynchronous on `stream` (a cudaStream_t; NULL = default stream) and returns the
 * cudaError_t of the launch (0 = success). */
#ifndef EDGETL_CUDA_H
#define EDGETL_CUDA_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define EDGETL_CUDA_API __declspec(dllexport)
#else
#define EDGETL_CUDA_API __attribute__((visibility("default")))
#endif

/* frames uint8 [n, h_in, w_in, 3] -> out float32 [n, 3, h_out, w_out]: bilinear (half-pixel, clamped, no
 * antialias) resize, then out[c] = resized[channels[c]] * scale[c] + bias[c]. */
EDGETL_CUDA_API int edgetl_preprocess_cuda(const uint8_t* frames, float* out, int64_t n, int64_t h_in,
                                           int64_t w_in, int64_t h_out, int64_t w_out, const float* scale,
                                           const float* bias, const int32_t* channels, void* stream);

/* x float32 [n, c, hw] -> probs float32 [n, k] = softmax(mean_hw(x) @ weight[k, c]^T + bias[k]),
 * label int64 [n] = first argmax of the logits. Needs (c + k) * 4 bytes of shared memory per block: returns
 * cudaErrorInvalidValue (1) when c + k exceeds edgetl_pool_head_cuda_max_width(). */
EDGETL_CUDA_API int edgetl_pool_head_cuda(const float* x, const float* weight, const float* bias, float* probs,
                                          int64_t* label, int64_t n, int64_t c, int64_t hw, int64_t k,
                                          void* stream);

EDGETL_CUDA_API int64_t edgetl_pool_head_cuda_max_width(void);

#ifdef __cplusplus
}
#endif

#endif /* EDGETL_CUDA_H */
