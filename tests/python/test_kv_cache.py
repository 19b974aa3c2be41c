"""The KV cache through the Python client, against an independent numpy
implementation of MLX's affine quantization (written here from MLX's
published formula, not from Engram's C++): the server's codes, scales and
biases must equal the reference bit for bit, and its dequantized output must
equal the reference's dequantization.

Run by ctest with ENGRAMD=<path to engramd> and PYTHONPATH=<build>/python.
"""

import unittest

import numpy as np

import engram
from engram import KVCache, KVModel
from engramd_fixture import EngramdTestCase


def float32_to_bfloat16_bits(x):
    """Round-to-nearest-even float32 -> bfloat16 bits (as uint16)."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def bfloat16_bits_to_float32(b):
    return (np.asarray(b, np.uint16).astype(np.uint32) << 16).view(np.float32)


def to_float32(x, dtype):
    return x.astype(np.float32) if dtype == "float16" else bfloat16_bits_to_float32(x)


def from_float32(x, dtype):
    return x.astype(np.float16) if dtype == "float16" else float32_to_bfloat16_bits(x)


def mlx_quantize(x, bits, group, dtype):
    """MLX's affine quantization of the last axis; returns (words, scales, biases)."""
    rows = x.shape[:-1]
    w = to_float32(x, dtype).reshape(-1, group)
    n_bins = np.float32(2 ** bits - 1)
    w_max = w.max(axis=1)
    w_min = w.min(axis=1)
    low_is_edge = np.abs(w_min) > np.abs(w_max)
    scale = np.maximum((w_max - w_min) / n_bins, np.float32(1e-7))
    scale = np.where(low_is_edge, scale, -scale).astype(np.float32)
    edge = np.where(low_is_edge, w_min, w_max).astype(np.float32)
    q0 = np.rint(edge / scale)
    pinned = q0 != 0
    scale = np.where(pinned, edge / np.where(pinned, q0, np.float32(1)), scale).astype(np.float32)
    bias = np.where(pinned, edge, np.float32(0)).astype(np.float32)
    codes = np.clip(np.rint((w - bias[:, None]) / scale[:, None]), 0, n_bins).astype(np.uint32)
    per_word = 32 // bits
    codes = codes.reshape(-1, per_word) << (np.arange(per_word, dtype=np.uint32) * bits)
    words = np.bitwise_or.reduce(codes, axis=1)
    groups = x.shape[-1] // group
    return (words.reshape(*rows, -1), from_float32(scale, dtype).reshape(*rows, groups),
            from_float32(bias, dtype).reshape(*rows, groups))


def mlx_dequantize(words, scales, biases, bits, group, dtype):
    per_word = 32 // bits
    codes = (words[..., None] >> (np.arange(per_word, dtype=np.uint32) * bits)) & (2 ** bits - 1)
    codes = codes.reshape(*words.shape[:-1], -1).astype(np.float32)
    s = np.repeat(to_float32(scales, dtype), group, axis=-1)
    b = np.repeat(to_float32(biases, dtype), group, axis=-1)
    return from_float32((s * codes).astype(np.float32) + b, dtype)


def test_tensors(model, tokens, seed):
    """Per-layer K and V with the awkward groups mixed in: all negative,
    constant, zero, one outlier, wide range."""
    rng = np.random.default_rng(seed)
    shape = (model.n_kv_heads, tokens, model.head_dim)
    out = []
    for _ in range(2 * model.n_layers):
        x = rng.standard_normal(shape).astype(np.float32)
        g = model.kv_group_size
        x[0, 0::5, :g] = -np.abs(x[0, 0::5, :g]) - 0.5
        x[0, 1::5, :g] = 0.75
        x[0, 2::5, :g] = 0.0
        x[0, 3::5, g // 2] = 40.0
        x[-1, 4::5, :] *= 1000.0
        out.append(from_float32(x, model.dtype))
    return out[:model.n_layers], out[model.n_layers:]


class KVCacheTest(EngramdTestCase):
    def cache(self, model):
        c = KVCache(self.server.address, model)
        self.addCleanup(c.close)
        return c

    def check_against_reference(self, model, tokens, agent):
        cache = self.cache(model)
        token_ids = list(range(1000, 1000 + tokens))
        keys, values = test_tensors(model, tokens, seed=tokens + model.kv_bits)
        response = cache.save(agent, token_ids, keys, values)
        self.assertEqual(response.tokens, tokens)

        ids, layers = cache.load_quantized(agent)
        self.assertEqual(ids, token_ids)
        for layer in range(model.n_layers):
            for kv, source in (("k", keys[layer]), ("v", values[layer])):
                words, scales, biases = mlx_quantize(source, model.kv_bits, model.kv_group_size,
                                                     model.dtype)
                np.testing.assert_array_equal(layers[layer][f"{kv}_weights"], words)
                np.testing.assert_array_equal(layers[layer][f"{kv}_scales"].view(np.uint16),
                                              scales.view(np.uint16))
                np.testing.assert_array_equal(layers[layer][f"{kv}_biases"].view(np.uint16),
                                              biases.view(np.uint16))

        ids, got_keys, got_values = cache.load(agent)
        for layer in range(model.n_layers):
            for got, source in ((got_keys[layer], keys[layer]), (got_values[layer], values[layer])):
                expected = mlx_dequantize(*mlx_quantize(source, model.kv_bits,
                                                        model.kv_group_size, model.dtype),
                                          model.kv_bits, model.kv_group_size, model.dtype)
                np.testing.assert_array_equal(got.view(np.uint16), expected.view(np.uint16))
        return cache, token_ids, keys, values

    def test_codec_matches_numpy_reference_bit_for_bit(self):
        for bits, group, dtype in ((4, 64, "float16"), (4, 32, "float16"), (4, 128, "float16"),
                                   (8, 64, "float16"), (4, 64, "bfloat16"), (8, 128, "bfloat16")):
            with self.subTest(bits=bits, group=group, dtype=dtype):
                model = KVModel(f"ref-{bits}-{group}-{dtype}", n_layers=2, n_kv_heads=2,
                                head_dim=128, dtype=dtype, kv_bits=bits, kv_group_size=group)
                self.check_against_reference(model, tokens=300, agent="ref")

    def test_relative_error_on_gaussian_data(self):
        model = KVModel("rmse", n_layers=1, n_kv_heads=8, head_dim=128)
        cache = self.cache(model)
        rng = np.random.default_rng(0)
        keys = [rng.standard_normal((8, 512, 128)).astype(np.float16)]
        cache.save("g", list(range(512)), keys, keys)
        _, got, _ = cache.load("g")
        x = keys[0].astype(np.float64)
        rmse = np.sqrt(np.sum((got[0].astype(np.float64) - x) ** 2) / np.sum(x ** 2))
        self.assertLess(rmse, 0.1)
        self.assertGreater(rmse, 0.02)

    def test_ranges_prefixes_quantized_round_trip_and_errors(self):
        model = KVModel("py-model", n_layers=2, n_kv_heads=2, head_dim=64)
        cache, token_ids, keys, _ = self.check_against_reference(model, tokens=700, agent="a")
        ids, part, _ = cache.load("a", start=250, end=520)
        self.assertEqual(ids, token_ids[250:520])
        _, full, _ = cache.load("a")
        np.testing.assert_array_equal(part[1], full[1][:, 250:520, :])

        # Quantized in, quantized out: identical tensors.
        _, layers = cache.load_quantized("a")
        cache.save_quantized("copy", token_ids, layers)
        _, copied = cache.load_quantized("copy")
        for layer in range(2):
            for name, array in layers[layer].items():
                np.testing.assert_array_equal(copied[layer][name], array)

        self.assertEqual(cache.match_prefix("a", token_ids[:600] + [7]), (600, 0))
        self.assertEqual(cache.match_prefix("b", token_ids[:600], any_agent=True), (0, 512))
        self.assertEqual({c.agent_id for c in cache.list()} >= {"a", "copy"}, True)
        self.assertEqual(cache.list(page_size=1), cache.list())  # one cache per page

        with self.assertRaises(engram.NotFoundError):
            cache.load("nobody")
        with self.assertRaises(engram.InvalidArgumentError):
            cache.save("a", token_ids, keys[:1], keys[:1])  # one layer short
        other = KVModel("py-model", n_layers=2, n_kv_heads=4, head_dim=64)
        with self.assertRaises(engram.FailedPreconditionError):
            self.cache(other).load("a")
        self.assertEqual(cache.delete("copy"), 1)
        with self.assertRaises(engram.NotFoundError):
            cache.delete("copy")


if __name__ == "__main__":
    unittest.main()
