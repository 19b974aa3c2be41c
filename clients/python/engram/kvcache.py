"""KV caches: save an agent's attention KV cache, restore it instead of prefill.

    from engram import KVCache, KVModel
    model = KVModel("llama-3.1-8b", n_layers=32, n_kv_heads=8, head_dim=128)
    cache = KVCache("127.0.0.1:50051", model)
    cache.save("alice", token_ids, keys, values)   # per layer [heads, tokens, head_dim]
    token_ids, keys, values = cache.load("alice")

Arrays are numpy: float16 models use np.float16; bfloat16 models use
np.uint16 holding the raw bfloat16 bits (numpy has no bfloat16). The server
stores the cache 4-bit (or 8-bit) group-quantized in MLX's affine format;
`save_quantized` / `load_quantized` move those tensors as they are
(weights uint32 [heads, tokens, head_dim * bits / 32], scales and biases
[heads, tokens, head_dim / group] in the model's dtype).
"""

import dataclasses
import time
from typing import Dict, List, Optional, Sequence, Tuple

import grpc
import numpy as np

from engram._client import GrpcClient
from engram.errors import InvalidArgumentError, from_rpc_error, translate_errors
from engram.memory import agent_header
from engram.v1 import kvcache_pb2, kvcache_pb2_grpc

BLOCK_TOKENS = 256

_DTYPES = {"float16": kvcache_pb2.KV_DTYPE_FLOAT16, "bfloat16": kvcache_pb2.KV_DTYPE_BFLOAT16}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}
_PARTS = ("weights", "scales", "biases")


@dataclasses.dataclass(frozen=True)
class KVModel:
    model_id: str
    n_layers: int
    n_kv_heads: int
    head_dim: int
    dtype: str = "float16"
    kv_bits: int = 4
    kv_group_size: int = 64

    def to_proto(self) -> kvcache_pb2.KvModel:
        if self.dtype not in _DTYPES:
            raise InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"dtype must be one of {sorted(_DTYPES)}")
        return kvcache_pb2.KvModel(model_id=self.model_id, n_layers=self.n_layers,
                                   n_kv_heads=self.n_kv_heads, head_dim=self.head_dim,
                                   dtype=_DTYPES[self.dtype], kv_bits=self.kv_bits,
                                   kv_group_size=self.kv_group_size)

    @staticmethod
    def from_proto(proto) -> "KVModel":
        return KVModel(proto.model_id, proto.n_layers, proto.n_kv_heads, proto.head_dim,
                       _DTYPE_NAMES.get(proto.dtype, "float16"), proto.kv_bits,
                       proto.kv_group_size)

    @property
    def numpy_dtype(self):
        return np.float16 if self.dtype == "float16" else np.uint16


@dataclasses.dataclass
class CacheInfo:
    agent_id: str
    model: KVModel
    tokens: int
    blocks: int
    bytes: int
    updated_at_us: int


def _blocks(total: int):
    for block in range((total + BLOCK_TOKENS - 1) // BLOCK_TOKENS):
        start = block * BLOCK_TOKENS
        yield block, start, min(total, start + BLOCK_TOKENS)


class KVCache(GrpcClient):
    """KV caches of one model on one engramd. Safe to share across threads."""

    def __init__(self, address: str, model: KVModel, timeout: float = 120.0,
                 max_message_bytes: int = 64 << 20, write_attempts: int = 3, **connection):
        """`connection`: token and TLS options (engram._client.GrpcClient).
        `write_attempts`: a save refused for overload (RESOURCE_EXHAUSTED with
        a retry delay: nothing was stored) is sent again after that delay, up
        to this many attempts in all."""
        super().__init__(address, timeout,
                         [("grpc.max_receive_message_length", max_message_bytes),
                          ("grpc.max_send_message_length", max_message_bytes)], **connection)
        self.model = model
        self.write_attempts = max(1, write_attempts)
        self._stub = kvcache_pb2_grpc.KVCacheServiceStub(self._channel)

    def _check_layers(self, name, arrays, shape_tail, dtype):
        if len(arrays) != self.model.n_layers:
            raise InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"{name}: {len(arrays)} layers, the model has "
                                       f"{self.model.n_layers}")
        for layer, array in enumerate(arrays):
            if array.dtype != dtype or array.ndim != 3 or array.shape[0] != \
                    self.model.n_kv_heads or array.shape[2] != shape_tail:
                raise InvalidArgumentError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{name}[{layer}] must be {np.dtype(dtype).name} [n_kv_heads="
                    f"{self.model.n_kv_heads}, tokens, {shape_tail}], got "
                    f"{array.dtype} {list(array.shape)}")

    def _save(self, agent: str, token_ids, encoding, block_messages):
        """`block_messages()` yields the KvBlocks; it is called again for each attempt."""
        header = kvcache_pb2.SaveCacheHeader(agent_id=agent, model=self.model.to_proto(),
                                             token_ids=[int(t) for t in token_ids],
                                             encoding=encoding)

        def messages():
            yield kvcache_pb2.SaveCacheRequest(header=header)
            for block in block_messages():
                yield kvcache_pb2.SaveCacheRequest(block=block)

        backoff = 0.1
        for attempt in range(1, self.write_attempts + 1):
            try:
                return self._stub.SaveCache(messages(), timeout=self.timeout,
                                            metadata=agent_header(agent))
            except grpc.RpcError as rpc_error:
                error = from_rpc_error(rpc_error)
                if error.retry_after is None or attempt == self.write_attempts:
                    raise error from None
                time.sleep(max(backoff, error.retry_after))
                backoff *= 2

    def save(self, agent: str, token_ids: Sequence[int], keys: Sequence[np.ndarray],
             values: Sequence[np.ndarray]):
        """Stores per-layer K and V [n_kv_heads, tokens, head_dim] (quantized by the server).

        Atomic: the agent's previous cache of this model stays until the new
        one is complete. Returns the server's SaveCacheResponse.
        """
        dtype = self.model.numpy_dtype
        self._check_layers("keys", keys, self.model.head_dim, dtype)
        self._check_layers("values", values, self.model.head_dim, dtype)
        total = len(token_ids)

        def blocks():
            for layer in range(self.model.n_layers):
                for block, start, end in _blocks(total):
                    yield kvcache_pb2.KvBlock(
                        layer=layer, block=block,
                        keys=np.ascontiguousarray(keys[layer][:, start:end, :]).tobytes(),
                        values=np.ascontiguousarray(values[layer][:, start:end, :]).tobytes())

        return self._save(agent, token_ids, kvcache_pb2.KV_ENCODING_FLOAT, blocks)

    def save_quantized(self, agent: str, token_ids: Sequence[int],
                       layers: Sequence[Dict[str, np.ndarray]]):
        """Stores already quantized tensors: per layer a dict with k_weights,
        k_scales, k_biases, v_weights, v_scales, v_biases."""
        total = len(token_ids)
        words = self.model.head_dim * self.model.kv_bits // 32
        groups = self.model.head_dim // self.model.kv_group_size
        for kv in "kv":
            self._check_layers(f"{kv}_weights", [l[f"{kv}_weights"] for l in layers], words,
                               np.uint32)
            for part in ("scales", "biases"):
                self._check_layers(f"{kv}_{part}", [l[f"{kv}_{part}"] for l in layers], groups,
                                   self.model.numpy_dtype)

        def tensor(layer, kv, start, end):
            return kvcache_pb2.QuantizedTensor(**{
                part: np.ascontiguousarray(layers[layer][f"{kv}_{part}"][:, start:end, :]).tobytes()
                for part in _PARTS})

        def blocks():
            for layer in range(self.model.n_layers):
                for block, start, end in _blocks(total):
                    yield kvcache_pb2.KvBlock(layer=layer, block=block,
                                              quantized_keys=tensor(layer, "k", start, end),
                                              quantized_values=tensor(layer, "v", start, end))

        return self._save(agent, token_ids, kvcache_pb2.KV_ENCODING_QUANTIZED, blocks)

    def _load(self, agent, start, end, encoding, output_dtype=None):
        request = kvcache_pb2.LoadCacheRequest(
            agent_id=agent, model_id=self.model.model_id, expect_model=self.model.to_proto(),
            encoding=encoding, token_start=start, token_end=end,
            output_dtype=_DTYPES[output_dtype] if output_dtype else 0)
        return self._stub.LoadCache(request, timeout=self.timeout,
                                    metadata=agent_header(agent))

    @translate_errors
    def load(self, agent: str, start: int = 0, end: int = 0,
             dtype: Optional[str] = None) -> Tuple[List[int], List[np.ndarray], List[np.ndarray]]:
        """Token ids and dequantized per-layer K and V of tokens [start, end) (end 0: all)."""
        stream = self._load(agent, start, end, kvcache_pb2.KV_ENCODING_FLOAT, dtype)
        header = next(stream).header
        count = header.token_end - header.token_start
        out_dtype = np.float16 if header.dtype == kvcache_pb2.KV_DTYPE_FLOAT16 else np.uint16
        shape = (self.model.n_kv_heads, count, self.model.head_dim)
        keys = [np.empty(shape, out_dtype) for _ in range(self.model.n_layers)]
        values = [np.empty(shape, out_dtype) for _ in range(self.model.n_layers)]
        for message in stream:
            b = message.block
            at = b.token_offset - header.token_start
            piece = (self.model.n_kv_heads, b.tokens, self.model.head_dim)
            keys[b.layer][:, at:at + b.tokens, :] = \
                np.frombuffer(b.keys, out_dtype).reshape(piece)
            values[b.layer][:, at:at + b.tokens, :] = \
                np.frombuffer(b.values, out_dtype).reshape(piece)
        return list(header.token_ids), keys, values

    @translate_errors
    def load_quantized(self, agent: str, start: int = 0,
                       end: int = 0) -> Tuple[List[int], List[Dict[str, np.ndarray]]]:
        """Token ids and per-layer quantized tensors (see save_quantized)."""
        stream = self._load(agent, start, end, kvcache_pb2.KV_ENCODING_QUANTIZED)
        header = next(stream).header
        count = header.token_end - header.token_start
        heads = self.model.n_kv_heads
        widths = {"weights": (self.model.head_dim * self.model.kv_bits // 32, np.uint32),
                  "scales": (self.model.head_dim // self.model.kv_group_size,
                             self.model.numpy_dtype),
                  "biases": (self.model.head_dim // self.model.kv_group_size,
                             self.model.numpy_dtype)}
        layers = [{f"{kv}_{part}": np.empty((heads, count, width), dtype)
                   for kv in "kv" for part, (width, dtype) in widths.items()}
                  for _ in range(self.model.n_layers)]
        for message in stream:
            b = message.block
            at = b.token_offset - header.token_start
            for kv, tensor in (("k", b.quantized_keys), ("v", b.quantized_values)):
                for part, (width, dtype) in widths.items():
                    layers[b.layer][f"{kv}_{part}"][:, at:at + b.tokens, :] = np.frombuffer(
                        getattr(tensor, part), dtype).reshape(heads, b.tokens, width)
        return list(header.token_ids), layers

    @translate_errors
    def match_prefix(self, agent: str, token_ids: Sequence[int],
                     any_agent: bool = False) -> Tuple[int, int]:
        """(tokens the agent's cache holds, tokens any agent's blocks hold) of the prefix."""
        request = kvcache_pb2.MatchPrefixRequest(agent_id=agent, model=self.model.to_proto(),
                                                 token_ids=[int(t) for t in token_ids],
                                                 any_agent=any_agent)
        response = self._stub.MatchPrefix(request, timeout=self.timeout,
                                          metadata=agent_header(agent))
        return response.agent_tokens, response.shared_tokens

    @translate_errors
    def list(self, agent: str = "", page_size: int = 0) -> List[CacheInfo]:
        """Every cache (of one agent when given), fetched page_size at a time."""
        caches: List[CacheInfo] = []
        page_token = ""
        while True:
            response = self._stub.ListCaches(
                kvcache_pb2.ListCachesRequest(agent_id=agent, page_size=page_size,
                                              page_token=page_token),
                timeout=self.timeout)
            caches.extend(CacheInfo(c.agent_id, KVModel.from_proto(c.model), c.tokens, c.blocks,
                                    c.bytes, c.updated_at_us) for c in response.caches)
            page_token = response.next_page_token
            if not page_token:
                return caches

    @translate_errors
    def delete(self, agent: str, all_models: bool = False) -> int:
        """Deletes the agent's cache of this model (or all its caches); returns the count."""
        request = kvcache_pb2.DeleteCacheRequest(
            agent_id=agent, model_id="" if all_models else self.model.model_id)
        return self._stub.DeleteCache(request, timeout=self.timeout,
                                      metadata=agent_header(agent)).caches

    @translate_errors
    def stats(self):
        return self._stub.Stats(kvcache_pb2.KvStatsRequest(), timeout=self.timeout)

    @translate_errors
    def export(self, agent: str, path: str):
        """Writes the cache as safetensors at `path` inside the server's kv.export_dir."""
        request = kvcache_pb2.ExportCacheRequest(agent_id=agent, model_id=self.model.model_id,
                                                 path=path)
        return self._stub.ExportCache(request, timeout=self.timeout)

    @translate_errors
    def import_file(self, path: str, agent: str = "") -> CacheInfo:
        request = kvcache_pb2.ImportCacheRequest(path=path, agent_id=agent)
        c = self._stub.ImportCache(request, timeout=self.timeout).cache
        return CacheInfo(c.agent_id, KVModel.from_proto(c.model), c.tokens, c.blocks, c.bytes,
                         c.updated_at_us)
