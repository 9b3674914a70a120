// Multi-threaded CPU kernels (float32) for the encoder's elementwise work: exact GELU,
// LayerNorm and softmax, forward and backward, dropout, and fake quantization's abs-max and
// quantize-dequantize. Paddle 2.6 runs these on one thread
// on the CPU; here each parallelises with OpenMP and vectorises along rows. GELU, LayerNorm and
// softmax compute what Paddle's kernels compute, up to rounding; dropout draws its own masks.
// The ops are registered as Paddle custom operators with gradients.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <omp.h>

#include "paddle/extension.h"

namespace {

constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;

void CheckFloat32(const paddle::Tensor& t, const char* name) {
  PD_CHECK(t.dtype() == paddle::DataType::FLOAT32, name, " must be float32");
  PD_CHECK(t.is_cpu(), name, " must be on the CPU");
}

}  // namespace

// ---- GELU (exact, erf form): y = x * Phi(x) -------------------------------------------------

std::vector<paddle::Tensor> GeluForward(const paddle::Tensor& x) {
  CheckFloat32(x, "x");
  auto out = paddle::empty_like(x);
  const float* in = x.data<float>();
  float* y = out.data<float>();
  const int64_t n = x.numel();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    y[i] = 0.5f * in[i] * (1.0f + std::erf(in[i] * kInvSqrt2));
  }
  return {out};
}

std::vector<paddle::Tensor> GeluBackward(const paddle::Tensor& x, const paddle::Tensor& dy) {
  auto dx = paddle::empty_like(x);
  const float* in = x.data<float>();
  const float* g = dy.data<float>();
  float* out = dx.data<float>();
  const int64_t n = x.numel();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float cdf = 0.5f * (1.0f + std::erf(in[i] * kInvSqrt2));
    const float pdf = kInvSqrt2Pi * std::exp(-0.5f * in[i] * in[i]);
    out[i] = g[i] * (cdf + in[i] * pdf);
  }
  return {dx};
}

PD_BUILD_OP(ernie_gelu)
    .Inputs({"X"})
    .Outputs({"Out"})
    .SetKernelFn(PD_KERNEL(GeluForward));

PD_BUILD_GRAD_OP(ernie_gelu)
    .Inputs({"X", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .SetKernelFn(PD_KERNEL(GeluBackward));

// ---- LayerNorm over the last axis: y = (x - mean) * rstd * weight + bias ----------------------
// x [rows, cols] (any leading shape), weight and bias [cols]; mean and rstd [rows] are saved for
// the backward.

std::vector<paddle::Tensor> LayerNormForward(const paddle::Tensor& x, const paddle::Tensor& weight,
                                             const paddle::Tensor& bias, float epsilon) {
  CheckFloat32(x, "x");
  const int64_t cols = x.shape().back();
  const int64_t rows = x.numel() / cols;
  PD_CHECK(weight.numel() == cols && bias.numel() == cols,
           "weight and bias must have the last axis' size ", cols);
  auto out = paddle::empty_like(x);
  auto mean = paddle::empty({rows}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  auto rstd = paddle::empty({rows}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  const float* in = x.data<float>();
  const float* w = weight.data<float>();
  const float* b = bias.data<float>();
  float* y = out.data<float>();
  float* mu = mean.data<float>();
  float* rs = rstd.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = in + r * cols;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < cols; ++c) sum += xr[c];
    const float m = sum / cols;
    float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
    for (int64_t c = 0; c < cols; ++c) sq += (xr[c] - m) * (xr[c] - m);
    const float s = 1.0f / std::sqrt(sq / cols + epsilon);
    float* yr = y + r * cols;
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) yr[c] = (xr[c] - m) * s * w[c] + b[c];
    mu[r] = m;
    rs[r] = s;
  }
  return {out, mean, rstd};
}

std::vector<paddle::Tensor> LayerNormBackward(const paddle::Tensor& x, const paddle::Tensor& weight,
                                              const paddle::Tensor& mean, const paddle::Tensor& rstd,
                                              const paddle::Tensor& dy) {
  const int64_t cols = x.shape().back();
  const int64_t rows = x.numel() / cols;
  auto dx = paddle::empty_like(x);
  auto dweight = paddle::empty_like(weight);
  auto dbias = paddle::empty_like(weight);
  const float* in = x.data<float>();
  const float* w = weight.data<float>();
  const float* mu = mean.data<float>();
  const float* rs = rstd.data<float>();
  const float* g = dy.data<float>();
  float* out = dx.data<float>();
  const int threads = omp_get_max_threads();
  std::vector<float> partial(static_cast<size_t>(threads) * 2 * cols, 0.0f);
#pragma omp parallel
  {
    float* dw = partial.data() + static_cast<size_t>(omp_get_thread_num()) * 2 * cols;
    float* db = dw + cols;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = in + r * cols;
      const float* gr = g + r * cols;
      const float m = mu[r];
      const float s = rs[r];
      float sum_g = 0.0f;
      float sum_g_xhat = 0.0f;
#pragma omp simd reduction(+ : sum_g, sum_g_xhat)
      for (int64_t c = 0; c < cols; ++c) {
        const float xhat = (xr[c] - m) * s;
        const float gw = gr[c] * w[c];
        sum_g += gw;
        sum_g_xhat += gw * xhat;
        dw[c] += gr[c] * xhat;
        db[c] += gr[c];
      }
      const float mean_g = sum_g / cols;
      const float mean_g_xhat = sum_g_xhat / cols;
      float* outr = out + r * cols;
#pragma omp simd
      for (int64_t c = 0; c < cols; ++c) {
        const float xhat = (xr[c] - m) * s;
        outr[c] = s * (gr[c] * w[c] - mean_g - xhat * mean_g_xhat);
      }
    }
  }
  float* dw_out = dweight.data<float>();
  float* db_out = dbias.data<float>();
  for (int64_t c = 0; c < cols; ++c) {
    float sw = 0.0f, sb = 0.0f;
    for (int t = 0; t < threads; ++t) {
      sw += partial[static_cast<size_t>(t) * 2 * cols + c];
      sb += partial[static_cast<size_t>(t) * 2 * cols + cols + c];
    }
    dw_out[c] = sw;
    db_out[c] = sb;
  }
  return {dx, dweight, dbias};
}

std::vector<std::vector<int64_t>> LayerNormShape(const std::vector<int64_t>& x,
                                                 const std::vector<int64_t>& weight,
                                                 const std::vector<int64_t>& bias) {
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < x.size(); ++i) rows *= x[i];
  return {x, {rows}, {rows}};
}

std::vector<paddle::DataType> LayerNormDtype(const paddle::DataType& x, const paddle::DataType& weight,
                                             const paddle::DataType& bias) {
  return {x, x, x};
}

PD_BUILD_OP(ernie_layer_norm)
    .Inputs({"X", "Weight", "Bias"})
    .Outputs({"Out", "Mean", "Rstd"})
    .Attrs({"epsilon: float"})
    .SetKernelFn(PD_KERNEL(LayerNormForward))
    .SetInferShapeFn(PD_INFER_SHAPE(LayerNormShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(LayerNormDtype));

PD_BUILD_GRAD_OP(ernie_layer_norm)
    .Inputs({"X", "Weight", "Mean", "Rstd", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Weight"), paddle::Grad("Bias")})
    .SetKernelFn(PD_KERNEL(LayerNormBackward));

// ---- Softmax over the last axis -------------------------------------------------------------

std::vector<paddle::Tensor> SoftmaxForward(const paddle::Tensor& x) {
  CheckFloat32(x, "x");
  const int64_t cols = x.shape().back();
  const int64_t rows = x.numel() / cols;
  auto out = paddle::empty_like(x);
  const float* in = x.data<float>();
  float* y = out.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = in + r * cols;
    float* yr = y + r * cols;
    float top = xr[0];
    for (int64_t c = 1; c < cols; ++c) top = std::max(top, xr[c]);
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < cols; ++c) {
      yr[c] = std::exp(xr[c] - top);
      sum += yr[c];
    }
    const float inv = 1.0f / sum;
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) yr[c] *= inv;
  }
  return {out};
}

std::vector<paddle::Tensor> SoftmaxBackward(const paddle::Tensor& out, const paddle::Tensor& dy) {
  const int64_t cols = out.shape().back();
  const int64_t rows = out.numel() / cols;
  auto dx = paddle::empty_like(out);
  const float* y = out.data<float>();
  const float* g = dy.data<float>();
  float* d = dx.data<float>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* yr = y + r * cols;
    const float* gr = g + r * cols;
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int64_t c = 0; c < cols; ++c) dot += yr[c] * gr[c];
    float* dr = d + r * cols;
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) dr[c] = yr[c] * (gr[c] - dot);
  }
  return {dx};
}

PD_BUILD_OP(ernie_softmax)
    .Inputs({"X"})
    .Outputs({"Out"})
    .SetKernelFn(PD_KERNEL(SoftmaxForward));

PD_BUILD_GRAD_OP(ernie_softmax)
    .Inputs({"Out", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .SetKernelFn(PD_KERNEL(SoftmaxBackward));

// ---- Dropout (upscale_in_train) with counter-based random masks ------------------------------
// Element i keeps its value (times 1 / (1 - p)) when the i-th 16-bit draw of SplitMix64(seed, i / 4)
// is >= round(p * 65536). The mask [x's shape] (uint8) is saved for the backward.

namespace {

inline uint64_t SplitMix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

}  // namespace

std::vector<paddle::Tensor> DropoutForward(const paddle::Tensor& x, float p, int64_t seed) {
  CheckFloat32(x, "x");
  PD_CHECK(p > 0.0f && p < 1.0f, "dropout probability must be in (0, 1), got ", p);
  auto out = paddle::empty_like(x);
  auto mask = paddle::empty(x.shape(), paddle::DataType::UINT8, paddle::CPUPlace());
  const float* in = x.data<float>();
  float* y = out.data<float>();
  uint8_t* keep = mask.data<uint8_t>();
  const int64_t n = x.numel();
  const uint32_t threshold = static_cast<uint32_t>(std::lround(p * 65536.0f));
  const float scale = 1.0f / (1.0f - p);
  const uint64_t key = SplitMix64(static_cast<uint64_t>(seed));
#pragma omp parallel for schedule(static)
  for (int64_t block = 0; block < (n + 3) / 4; ++block) {
    const uint64_t bits = SplitMix64(key ^ static_cast<uint64_t>(block) * 0xD1B54A32D192ED03ULL);
    for (int64_t j = 0; j < 4 && block * 4 + j < n; ++j) {
      const int64_t i = block * 4 + j;
      keep[i] = ((bits >> (16 * j)) & 0xFFFF) >= threshold;
      y[i] = keep[i] ? in[i] * scale : 0.0f;
    }
  }
  return {out, mask};
}

std::vector<paddle::Tensor> DropoutBackward(const paddle::Tensor& mask, const paddle::Tensor& dy, float p,
                                            int64_t seed) {
  auto dx = paddle::empty_like(dy);
  const uint8_t* keep = mask.data<uint8_t>();
  const float* g = dy.data<float>();
  float* d = dx.data<float>();
  const int64_t n = dy.numel();
  const float scale = 1.0f / (1.0f - p);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) d[i] = keep[i] ? g[i] * scale : 0.0f;
  return {dx};
}

std::vector<std::vector<int64_t>> DropoutShape(const std::vector<int64_t>& x) { return {x, x}; }

std::vector<paddle::DataType> DropoutDtype(const paddle::DataType& x) { return {x, paddle::DataType::UINT8}; }

PD_BUILD_OP(ernie_dropout)
    .Inputs({"X"})
    .Outputs({"Out", "Mask"})
    .Attrs({"p: float", "seed: int64_t"})
    .SetKernelFn(PD_KERNEL(DropoutForward))
    .SetInferShapeFn(PD_INFER_SHAPE(DropoutShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(DropoutDtype));

PD_BUILD_GRAD_OP(ernie_dropout)
    .Inputs({"Mask", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"p: float", "seed: int64_t"})
    .SetKernelFn(PD_KERNEL(DropoutBackward));

// ---- Fake quantization (forward only: its straight-through gradient is the identity) ---------

std::vector<paddle::Tensor> AbsMax(const paddle::Tensor& x) {
  CheckFloat32(x, "x");
  auto out = paddle::empty({1}, paddle::DataType::FLOAT32, paddle::CPUPlace());
  const float* in = x.data<float>();
  const int64_t n = x.numel();
  float top = 0.0f;
#pragma omp parallel for simd reduction(max : top) schedule(static)
  for (int64_t i = 0; i < n; ++i) top = std::max(top, std::fabs(in[i]));
  out.data<float>()[0] = top;
  return {out};
}

// Paddle's ClipAndFakeQuantDequantFunctor (round_type 1): round(bins / s * clip(x, -s, s)) * s / bins.
// The quantization level is Paddle's; the dequantized value may differ from it in the last bit.
std::vector<paddle::Tensor> FakeQuantDequant(const paddle::Tensor& x, float scale, int bits) {
  CheckFloat32(x, "x");
  auto out = paddle::empty_like(x);
  const float* in = x.data<float>();
  float* y = out.data<float>();
  const int64_t n = x.numel();
  const float bins = static_cast<float>((1 << (bits - 1)) - 1);
  const float step = bins * (1.0f / scale);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float clipped = std::min(std::max(in[i], -scale), scale);
    y[i] = std::round(step * clipped) * scale / bins;
  }
  return {out};
}

std::vector<std::vector<int64_t>> AbsMaxShape(const std::vector<int64_t>& x) { return {{1}}; }

PD_BUILD_OP(ernie_abs_max)
    .Inputs({"X"})
    .Outputs({"Out"})
    .SetKernelFn(PD_KERNEL(AbsMax))
    .SetInferShapeFn(PD_INFER_SHAPE(AbsMaxShape));

PD_BUILD_OP(ernie_fake_quant_dequant)
    .Inputs({"X"})
    .Outputs({"Out"})
    .Attrs({"scale: float", "bits: int"})
    .SetKernelFn(PD_KERNEL(FakeQuantDequant));
