#!/usr/bin/python3
"""Writes the request fuzzer's seeds (tests/fuzz/corpus/requests/): valid
requests for the spaces request_fuzz.cc creates, one file per call kind and
shape, byte 0 being the kind. Run from a build's python directory:

  PYTHONPATH=build/python /usr/bin/python3 tests/fuzz/make_request_seeds.py
"""

import os
import struct

from engram.v1 import admin_pb2, kvcache_pb2, memory_pb2

# The order of kCalls in request_fuzz.cc, then SaveCache and LoadCache.
KINDS = ["PutEpisodes", "Search", "ListEpisodes", "UpdateEpisode", "DeleteEpisodes",
         "GetHistory", "GetEpisode", "AnalyzeText", "CreateSpace", "GetSpace", "MatchPrefix",
         "ListCaches", "DeleteCache", "ExportCache", "ImportCache", "Stats", "Checkpoint",
         "ListAgents", "ServerInfo", "ImportEpisodes", "SaveCache", "LoadCache"]

MODEL = kvcache_pb2.KvModel(model_id="m", n_layers=1, n_kv_heads=1, head_dim=64,
                            dtype=kvcache_pb2.KV_DTYPE_FLOAT16)


def filters():
    yield memory_pb2.EpisodeFilter()
    yield memory_pb2.EpisodeFilter(agent_id="alice", session_id="s1")
    f = memory_pb2.EpisodeFilter(agent_id="bob", kinds=["message", "note"],
                                 event_time_from_us=0, event_time_to_us=1 << 62)
    p = f.metadata.add(key="n", op=memory_pb2.MetadataPredicate.GE)
    p.value.int_value = 2
    f.metadata.add(key="tag", op=memory_pb2.MetadataPredicate.EXISTS)
    yield f


def seeds():
    episode = memory_pb2.Episode(agent_id="alice", session_id="s1", text="tea at noon",
                                 embedding=[1, -2, 3, 0.5, 0, 0, 7, 1])
    episode.metadata["n"].int_value = 3
    yield "PutEpisodes", memory_pb2.PutEpisodesRequest(
        space="s", episodes=[memory_pb2.EpisodeWrite(request_id="r1", episode=episode)])
    yield "PutEpisodes", memory_pb2.PutEpisodesRequest(space="t", episodes=[
        memory_pb2.EpisodeWrite(episode=memory_pb2.Episode(agent_id="bob", text="trains",
                                                           embedding=[0, 1, 0]))])
    for i, f in enumerate(filters()):
        yield "Search", memory_pb2.SearchRequest(space="s", k=5, filter=f,
                                                 query=[1, 0, 0, 0, 0, 0, 0, 2])
        yield "Search", memory_pb2.SearchRequest(space="t", k=3, filter=f, query_text="tea",
                                                 route=memory_pb2.ROUTE_DELIBERATE,
                                                 reference_time_us=1700000000000000)
        yield "Search", memory_pb2.SearchRequest(space="c", k=2, filter=f, exact=i == 1,
                                                 scan=i == 2, query=[1] * 8, query_text="x")
        yield "ListEpisodes", memory_pb2.ListEpisodesRequest(space="s", filter=f, page_size=3)
    yield "ListEpisodes", memory_pb2.ListEpisodesRequest(space="s", page_token="AAAA")
    yield "UpdateEpisode", memory_pb2.UpdateEpisodeRequest(
        space="s", id=1, expected_version=1, update_mask=["text"],
        episode=memory_pb2.Episode(text="changed"))
    yield "CreateSpace", memory_pb2.CreateSpaceRequest(space=memory_pb2.Space(
        name="u", dimension=2, metric=memory_pb2.METRIC_L2,
        text=memory_pb2.TextIndex(stem_language="german", bm25_k1=0.9, bm25_b=0.4)))
    yield "DeleteEpisodes", memory_pb2.DeleteEpisodesRequest(
        space="s", ids=memory_pb2.DeleteEpisodesRequest.Ids(ids=[1, 2]))
    yield "DeleteEpisodes", memory_pb2.DeleteEpisodesRequest(space="c", agent_id="bob")
    yield "GetHistory", memory_pb2.GetHistoryRequest(space="s", id=1, page_size=2)
    yield "GetEpisode", memory_pb2.GetEpisodeRequest(space="s", id=3)
    yield "AnalyzeText", memory_pb2.AnalyzeTextRequest(space="t", text="Running trains, 2023!")
    yield "CreateSpace", memory_pb2.CreateSpaceRequest(space=memory_pb2.Space(
        name="n", dimension=4, metric=memory_pb2.METRIC_COSINE))
    yield "GetSpace", memory_pb2.GetSpaceRequest(name="s")
    yield "MatchPrefix", kvcache_pb2.MatchPrefixRequest(agent_id="alice", model=MODEL,
                                                        token_ids=[1, 2, 3], any_agent=True)
    yield "ListCaches", kvcache_pb2.ListCachesRequest(agent_id="alice", page_size=2)
    yield "DeleteCache", kvcache_pb2.DeleteCacheRequest(agent_id="alice", model_id="m")
    yield "ExportCache", kvcache_pb2.ExportCacheRequest(agent_id="alice", model_id="m",
                                                        path="a/b.safetensors")
    yield "ImportCache", kvcache_pb2.ImportCacheRequest(path="b.safetensors", agent_id="x")
    yield "Stats", admin_pb2.StatsRequest()
    yield "Checkpoint", admin_pb2.CheckpointRequest(name="c1")
    # Episodes named by their callers' keys.
    keyed = memory_pb2.Episode(agent_id="alice", key="profile", text="likes tea",
                               embedding=[0, 1, 0, 0, 2, 0, 0, 1])
    yield "PutEpisodes", memory_pb2.PutEpisodesRequest(
        space="s", episodes=[memory_pb2.EpisodeWrite(episode=keyed),
                             memory_pb2.EpisodeWrite(request_id="r2", episode=episode)])
    key = memory_pb2.EpisodeKey(agent_id="alice", key="profile")
    yield "GetEpisode", memory_pb2.GetEpisodeRequest(space="s", key=key)
    yield "GetHistory", memory_pb2.GetHistoryRequest(space="s", key=key, page_size=1)
    yield "UpdateEpisode", memory_pb2.UpdateEpisodeRequest(
        space="s", key=key, update_mask=["importance"],
        episode=memory_pb2.Episode(importance=0.5, key="profile"))
    yield "DeleteEpisodes", memory_pb2.DeleteEpisodesRequest(
        space="s", keys=memory_pb2.DeleteEpisodesRequest.Keys(agent_id="alice",
                                                              keys=["profile", "other"]))
    yield "ListAgents", memory_pb2.ListAgentsRequest(space="s", page_size=1)
    yield "ListAgents", memory_pb2.ListAgentsRequest(space="c", page_token="AAAA")
    yield "ServerInfo", admin_pb2.ServerInfoRequest()
    # Episodes moved from another shard: with history, and with an id of
    # shard 0's range it never assigned.
    moved = memory_pb2.Episode(id=(2 << 40) | 7, version=3, agent_id="alice", key="moved",
                               embedding=[1, 0, 0, 0, 0, 0, 0, 2], created_at_us=5,
                               updated_at_us=9)
    old = memory_pb2.Episode()
    old.CopyFrom(moved)
    old.version = 2
    yield "ImportEpisodes", memory_pb2.ImportEpisodesRequest(
        space="s", episodes=[memory_pb2.ImportedEpisode(episode=moved, history=[old])])
    unassigned = memory_pb2.Episode()
    unassigned.CopyFrom(moved)
    unassigned.id = 1 << 30
    yield "ImportEpisodes", memory_pb2.ImportEpisodesRequest(
        space="s", episodes=[memory_pb2.ImportedEpisode(episode=unassigned, history=[moved])])
    yield "LoadCache", kvcache_pb2.LoadCacheRequest(agent_id="alice", model_id="m", token_start=1)


def save_cache_stream():
    header = kvcache_pb2.SaveCacheRequest(header=kvcache_pb2.SaveCacheHeader(
        agent_id="alice", model=MODEL, token_ids=list(range(10)),
        encoding=kvcache_pb2.KV_ENCODING_FLOAT))
    block = kvcache_pb2.SaveCacheRequest()
    block.block.layer = 0
    block.block.block = 0
    block.block.keys = bytes(10 * 64 * 2)
    block.block.values = bytes(10 * 64 * 2)
    out = b""
    for message in (header, block):
        raw = message.SerializeToString()
        out += struct.pack("<H", len(raw)) + raw
    return out


def main():
    directory = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "requests")
    os.makedirs(directory, exist_ok=True)
    counts = {}
    for kind, message in seeds():
        counts[kind] = counts.get(kind, 0) + 1
        with open(os.path.join(directory, f"{kind}-{counts[kind]}"), "wb") as f:
            f.write(bytes([KINDS.index(kind)]) + message.SerializeToString())
    with open(os.path.join(directory, "SaveCache-1"), "wb") as f:
        f.write(bytes([KINDS.index("SaveCache")]) + save_cache_stream())


if __name__ == "__main__":
    main()
