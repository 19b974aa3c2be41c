// The KV codec: the SIMD kernels against the scalar reference, bit for bit,
// and the format's promises (exact edge values, error bounds, packing).
// tests/python/test_kv_codec_reference.py checks the scalar path against an
// independent numpy implementation of MLX's formula.
#include "storage/kvcache/kv_codec.h"

#include <gtest/gtest.h>
#include <immintrin.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "storage/half_float.h"

namespace engram::kvcache {
namespace {

__attribute__((target("f16c"))) uint16_t HardwareHalf(float value) {
  return static_cast<uint16_t>(_cvtss_sh(value, _MM_FROUND_TO_NEAREST_INT));
}

struct Quantized {
  std::vector<uint32_t> words;
  std::vector<uint16_t> scales, biases;
};

Quantized QuantizeWith(const std::vector<uint16_t>& input, FloatType type, size_t rows, size_t dim,
                       CodecParams params, CodecKernel kernel) {
  Quantized q;
  q.words.assign(rows * params.WordsPerRow(dim), 0xDEADBEEF);
  q.scales.assign(rows * params.GroupsPerRow(dim), 0xFFFF);
  q.biases.assign(rows * params.GroupsPerRow(dim), 0xFFFF);
  Quantize(input.data(), type, rows, dim, params, q.words.data(), q.scales.data(), q.biases.data(),
           kernel);
  return q;
}

std::vector<uint16_t> Encode(const std::vector<float>& values, FloatType type) {
  std::vector<uint16_t> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = FromFloat(values[i], type);
  return out;
}

// Gaussian rows with some special groups: all negative, constant, zero,
// a single outlier, a wide range.
std::vector<float> TestValues(size_t rows, size_t dim, int group, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> values(rows * dim);
  for (float& v : values) v = normal(rng);
  size_t groups = values.size() / group;
  for (size_t g = 0; g < groups; ++g) {
    float* x = values.data() + g * group;
    switch (g % 7) {
      case 1:
        for (int j = 0; j < group; ++j) x[j] = -std::abs(x[j]) - 0.5f;
        break;
      case 2:
        for (int j = 0; j < group; ++j) x[j] = 0.75f;
        break;
      case 3:
        for (int j = 0; j < group; ++j) x[j] = 0.0f;
        break;
      case 4:
        x[group / 2] = 40.0f;
        break;
      case 5:
        for (int j = 0; j < group; ++j) x[j] *= 1000.0f;
        break;
      default:
        break;
    }
  }
  return values;
}

struct Case {
  int bits;
  int group;
  FloatType type;
};

class CodecTest : public ::testing::TestWithParam<Case> {};

TEST_P(CodecTest, Avx2MatchesScalarBitForBit) {
  if (!CodecKernelAvailable(CodecKernel::kAvx2)) GTEST_SKIP() << "no AVX2 on this CPU";
  const Case c = GetParam();
  const CodecParams params{c.bits, c.group};
  for (size_t dim : {size_t{128}, size_t{256}, static_cast<size_t>(c.group)}) {
    const size_t rows = 97;
    std::vector<uint16_t> input = Encode(TestValues(rows, dim, c.group, 7 + dim), c.type);
    Quantized scalar = QuantizeWith(input, c.type, rows, dim, params, CodecKernel::kScalar);
    Quantized simd = QuantizeWith(input, c.type, rows, dim, params, CodecKernel::kAvx2);
    ASSERT_EQ(scalar.words, simd.words) << "dim " << dim;
    ASSERT_EQ(scalar.scales, simd.scales);
    ASSERT_EQ(scalar.biases, simd.biases);
    for (FloatType out_type : {FloatType::kFloat16, FloatType::kBFloat16}) {
      std::vector<uint16_t> a(rows * dim, 0xFFFF), b(rows * dim, 0xFFFF);
      Dequantize(scalar.words.data(), scalar.scales.data(), scalar.biases.data(), c.type, rows, dim,
                 params, out_type, a.data(), CodecKernel::kScalar);
      Dequantize(scalar.words.data(), scalar.scales.data(), scalar.biases.data(), c.type, rows, dim,
                 params, out_type, b.data(), CodecKernel::kAvx2);
      ASSERT_EQ(a, b) << "dequantize to " << FloatTypeName(out_type);
    }
  }
}

TEST_P(CodecTest, EdgeValueIsExactAndCodesAreInRange) {
  const Case c = GetParam();
  const CodecParams params{c.bits, c.group};
  const size_t rows = 33, dim = 256;
  std::vector<uint16_t> input = Encode(TestValues(rows, dim, c.group, 3), c.type);
  Quantized q = QuantizeWith(input, c.type, rows, dim, params, CodecKernel::kAuto);
  std::vector<uint16_t> output(rows * dim);
  Dequantize(q.words.data(), q.scales.data(), q.biases.data(), c.type, rows, dim, params, c.type,
             output.data());
  for (size_t g = 0; g < rows * dim / c.group; ++g) {
    // The value of largest magnitude (the first, on ties) comes back exactly,
    // unless MLX's rule fell back to a zero bias (its code would be 0).
    size_t edge = g * c.group;
    for (size_t j = g * c.group; j < (g + 1) * c.group; ++j) {
      if (std::abs(ToFloat(input[j], c.type)) > std::abs(ToFloat(input[edge], c.type))) edge = j;
    }
    if (ToFloat(q.biases[g], c.type) != 0.0f) {
      EXPECT_EQ(output[edge], input[edge]) << "group " << g;
      EXPECT_EQ(q.biases[g], input[edge]) << "the bias is the edge value";
    }
  }
}

TEST_P(CodecTest, RelativeErrorOnGaussianData) {
  const Case c = GetParam();
  const CodecParams params{c.bits, c.group};
  const size_t rows = 4096, dim = 128;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> values(rows * dim);
  for (float& v : values) v = normal(rng);
  std::vector<uint16_t> input = Encode(values, c.type);
  Quantized q = QuantizeWith(input, c.type, rows, dim, params, CodecKernel::kAuto);
  std::vector<uint16_t> output(rows * dim);
  Dequantize(q.words.data(), q.scales.data(), q.biases.data(), c.type, rows, dim, params, c.type,
             output.data());
  double error = 0, norm = 0;
  for (size_t i = 0; i < input.size(); ++i) {
    double x = ToFloat(input[i], c.type), y = ToFloat(output[i], c.type);
    error += (x - y) * (x - y);
    norm += x * x;
  }
  double relative_rmse = std::sqrt(error / norm);
  RecordProperty("relative_rmse", std::to_string(relative_rmse));
  std::printf("relative RMSE %d-bit group %d %s: %.4f\n", c.bits, c.group,
              FloatTypeName(c.type).c_str(), relative_rmse);
  // The bound is for 4 bits at group 64; smaller groups do better,
  // 128 slightly worse; 8 bits ~16x better.
  double bound = c.bits == 8 ? 0.01 : (c.group == 128 ? 0.11 : 0.1);
  EXPECT_LT(relative_rmse, bound) << c.bits << "-bit, group " << c.group;
  EXPECT_GT(relative_rmse, c.bits == 8 ? 1e-4 : 0.02) << "suspiciously exact";
}

INSTANTIATE_TEST_SUITE_P(
    AllFormats, CodecTest,
    ::testing::Values(Case{4, 32, FloatType::kFloat16}, Case{4, 64, FloatType::kFloat16},
                      Case{4, 128, FloatType::kFloat16}, Case{8, 64, FloatType::kFloat16},
                      Case{4, 64, FloatType::kBFloat16}, Case{8, 32, FloatType::kBFloat16},
                      Case{8, 128, FloatType::kBFloat16}),
    [](const auto& info) {
      return std::to_string(info.param.bits) + "bit_g" + std::to_string(info.param.group) + "_" +
             FloatTypeName(info.param.type);
    });

TEST(CodecPacking, ElementIIsAtBits4iTo4iPlus3) {
  // A ramp 0..15 repeated with bias 0 pinned by a constant edge would be
  // fiddly; instead decode the packed words by hand and compare with what
  // dequantization produced.
  const CodecParams params{4, 64};
  std::vector<float> values(64);
  for (int i = 0; i < 64; ++i) values[i] = static_cast<float>(i % 16);
  std::vector<uint16_t> input = Encode(values, FloatType::kFloat16);
  Quantized q = QuantizeWith(input, FloatType::kFloat16, 1, 64, params, CodecKernel::kScalar);
  float scale = ToFloat(q.scales[0], FloatType::kFloat16);
  float bias = ToFloat(q.biases[0], FloatType::kFloat16);
  // max 15 is the edge (|15| > |0|): scale -1, bias 15, codes 15 - x.
  EXPECT_EQ(scale, -1.0f);
  EXPECT_EQ(bias, 15.0f);
  for (int i = 0; i < 64; ++i) {
    uint32_t code = (q.words[i / 8] >> (4 * (i % 8))) & 0xF;
    EXPECT_EQ(code, static_cast<uint32_t>(15 - i % 16)) << "element " << i;
  }
}

TEST(CodecConversions, HalfRoundTripAndHardwareRounding) {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    uint16_t half = static_cast<uint16_t>(bits);
    if ((half & 0x7C00) == 0x7C00) continue;  // inf / NaN
    ASSERT_EQ(FromFloat(ToFloat(half, FloatType::kFloat16), FloatType::kFloat16), half) << bits;
    ASSERT_EQ(FromFloat(ToFloat(half, FloatType::kBFloat16), FloatType::kBFloat16), half) << bits;
  }
  // Asked through CPUID: clang 14's __builtin_cpu_supports has no "f16c".
  if (!CpuHasAvx2AndF16c()) GTEST_SKIP() << "no F16C (with AVX2) to compare with";
  std::mt19937 rng(5);
  std::uniform_int_distribution<uint32_t> any;
  for (int i = 0; i < 200000; ++i) {
    // Floats across the half range, subnormals included.
    float exponent_scale = std::ldexp(1.0f, static_cast<int>(any(rng) % 44) - 28);
    float value = (static_cast<float>(any(rng)) / 4294967296.0f - 0.5f) * exponent_scale;
    uint16_t expected = HardwareHalf(value);
    ASSERT_EQ(FromFloat(value, FloatType::kFloat16), expected) << value;
  }
}

TEST(CodecValidation, RejectsUnsupportedParameters) {
  EXPECT_TRUE(ValidateCodec({4, 64}, 128).ok());
  EXPECT_TRUE(ValidateCodec({8, 32}, 96).ok());
  EXPECT_EQ(ValidateCodec({3, 64}, 128).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateCodec({4, 48}, 96).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateCodec({4, 64}, 96).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateCodec({4, 64}, 0).code(), absl::StatusCode::kInvalidArgument);
}

TEST(CodecValidation, FirstNonFinite) {
  std::vector<uint16_t> values(1000, FromFloat(1.5f, FloatType::kFloat16));
  EXPECT_EQ(FirstNonFinite(values.data(), values.size(), FloatType::kFloat16), 1000u);
  values[700] = 0x7C00;  // +inf
  EXPECT_EQ(FirstNonFinite(values.data(), values.size(), FloatType::kFloat16), 700u);
  values[300] = 0xFE00;  // NaN
  EXPECT_EQ(FirstNonFinite(values.data(), values.size(), FloatType::kFloat16), 300u);
  std::vector<uint16_t> bf(10, FromFloat(-2.0f, FloatType::kBFloat16));
  bf[9] = 0x7F80;
  EXPECT_EQ(FirstNonFinite(bf.data(), bf.size(), FloatType::kBFloat16), 9u);
}

}  // namespace
}  // namespace engram::kvcache
