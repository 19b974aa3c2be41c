"""Agents sharded across engramd instances (docs/sharding.md).

    from engram.sharding import ShardedMemory
    memory = ShardedMemory(["engram-0.engram:50051", "engram-1.engram:50051",
                            "engram-2.engram:50051"], space="notes")
    memory.add("likes tea", embedding, agent="alice")   # on alice's shard
    memory.search(query, k=5, agent="alice")            # alice's shard only
    memory.search(query, k=5, agent="")                 # every shard, merged

Addresses are given in shard order: the i-th is shard i, and each engramd
is asked (ServerInfo) to confirm its index and the shard count. Placement
is common/sharding.h's specification, implemented here again; both pass
tests/data/placement_vectors.json. move_agent() moves an agent between
shards when shards are added.
"""

import concurrent.futures
import dataclasses
import os
import heapq
import itertools
import uuid
from typing import Dict, Iterator, List, Optional, Sequence, Union

import grpc

from engram.admin import Admin
from engram.errors import (AlreadyExistsError, EngramError, FailedPreconditionError,
                           NotFoundError, from_rpc_error)
from engram.kvcache import CacheInfo, KVCache, KVModel
from engram.memory import (Episode, EpisodeId, Memory, SearchResults, Space,
                           agent_header)
from engram.v1 import kvcache_pb2, kvcache_pb2_grpc, memory_pb2

SHARD_ID_SHIFT = 40
_MASK = (1 << 64) - 1


def placement_hash(data: bytes) -> int:
    """64-bit FNV-1a, then MurmurHash3's fmix64 finalizer."""
    h = 0xcbf29ce484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001b3) & _MASK
    h ^= h >> 33
    h = (h * 0xff51afd7ed558ccd) & _MASK
    h ^= h >> 33
    h = (h * 0xc4ceb9fe1a85ec53) & _MASK
    return h ^ (h >> 33)


def shard_name(index: int) -> str:
    return f"shard-{index}"


def placement_weight(tenant: str, agent: str, shard: int) -> int:
    key = tenant.encode() + b"\0" + agent.encode() + b"\0" + shard_name(shard).encode()
    return placement_hash(key)


def owner_shard(tenant: str, agent: str, shard_count: int) -> int:
    """The shard that owns the agent: highest weight, ties to the lower index."""
    best, owner = -1, 0
    for shard in range(shard_count):
        weight = placement_weight(tenant, agent, shard)
        if weight > best:
            best, owner = weight, shard
    return owner


def shard_of_id(episode_id: int) -> int:
    """The shard that assigned an episode id (where it lives unless its agent moved)."""
    return episode_id >> SHARD_ID_SHIFT


def _discover(addresses: Sequence[str], timeout: float, connection) -> str:
    """Checks that addresses[i] is shard i of len(addresses); returns the
    caller's tenant (placement hashes it)."""
    if not addresses:
        raise ValueError("a sharded client needs the address of every shard")
    tenant = None
    for index, address in enumerate(addresses):
        with Admin(address, timeout=timeout, **connection) as admin:
            info = admin.server_info()
        count = int(info.get("shard_count") or 1)
        at = int(info.get("shard_index") or 0)
        if count != len(addresses) or at != index:
            raise FailedPreconditionError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{address} is shard {at} of {count}, but was given as shard {index} of "
                f"{len(addresses)}: list every shard's address, in shard order")
        if tenant is not None and info["tenant"] != tenant:
            raise FailedPreconditionError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{address} knows these credentials as tenant {info['tenant']!r}, shard 0 as "
                f"{tenant!r}")
        tenant = info["tenant"]
    return tenant


class _Shards:
    """A client per shard in `self.shards`, closed together."""

    shards: list

    def close(self):
        for shard in self.shards:
            shard.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ShardedMemory(_Shards):
    """engram.Memory over every shard of a deployment, routing by agent.

    - Writes and reads that name an agent (add, search with an agent,
      forget_agent, get/update/history/delete by key, list with an agent) go
      to the agent's shard. add_many splits a batch by shard: each shard's
      part is all-or-nothing, the batch as a whole is not; every episode gets
      a request id, so retrying a failed batch (error.request_ids, in input
      order) applies each episode once.
    - A search without an agent asks every shard at once and merges the top
      k by score. Vector scores are comparable across shards, so a merged
      vector search equals one engramd's; BM25 scores use each shard's own
      term statistics, so lexical and hybrid fan-outs can rank differently.
    - By id (get, update, history, delete): first the shard whose range the
      id is in (where it was created), then the others (its agent moved).
    - Spaces are created, deleted and counted on every shard.
    """

    def __init__(self, addresses: Sequence[str], space: Optional[str] = None,
                 agent: Optional[str] = None, session: str = "", timeout: float = 30.0,
                 write_attempts: int = 3, **connection):
        """`connection`: token and TLS options (engram._client.GrpcClient)."""
        self.tenant = _discover(addresses, timeout, connection)
        self.shards = [Memory(address, space=space, agent=agent, session=session, timeout=timeout,
                              write_attempts=write_attempts, **connection)
                       for address in addresses]
        self.agent = agent
        self.session = session
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(addresses))

    def close(self):
        self._pool.shutdown(wait=True)
        super().close()

    @property
    def space(self) -> str:
        return self.shards[0].space

    @space.setter
    def space(self, name: str):
        for shard in self.shards:
            shard.space = name

    def owner(self, agent: str) -> int:
        """The index of the agent's shard."""
        return owner_shard(self.tenant, agent, len(self.shards))

    def shard_of(self, agent: Optional[str]) -> Memory:
        agent = agent if agent is not None else (self.agent or "")
        return self.shards[self.owner(agent)]

    def _on_every_shard(self, call) -> List:
        """call(shard) on every shard at once; results in shard order."""
        return list(self._pool.map(call, self.shards))

    def _by_id(self, episode_id: int, call):
        """call(shard) on the shard holding the episode: its home shard first."""
        return self._locate(episode_id, call)[1]

    def _locate(self, episode_id: int, call):
        """(shard index, call(shard)) for the first shard where the call does
        not fail NOT_FOUND, trying the id's home shard first."""
        home = shard_of_id(episode_id)
        order = [home] if home < len(self.shards) else []
        order += [i for i in range(len(self.shards)) if i != home]
        not_found, other = None, None
        for index in order:
            try:
                return index, call(self.shards[index])
            except NotFoundError as error:
                not_found = not_found or error
            except EngramError as error:
                # A shard that is down may hold it: say so if no other does.
                if error.code != grpc.StatusCode.UNAVAILABLE:
                    raise
                other = other or error
        raise other or not_found

    # Spaces ---------------------------------------------------------------

    def create_space(self, dimension: int = 0, metric: str = "cosine",
                     name: Optional[str] = None, **options) -> Space:
        """Creates the space on every shard. Not atomic across shards: after a
        partial failure, calling it again finishes the job (a shard that has
        the space counts as done); AlreadyExistsError only when every shard
        had it."""
        created, exists = [], None
        for shard in self.shards:
            try:
                created.append(shard.create_space(dimension, metric, name, **options))
            except AlreadyExistsError as error:
                exists = error
        if not created:
            raise exists
        return created[0]

    def get_space(self, name: Optional[str] = None) -> Space:
        spaces = self._on_every_shard(lambda shard: shard.get_space(name))
        return dataclasses.replace(spaces[0],
                                   episode_count=sum(s.episode_count for s in spaces))

    def list_spaces(self) -> List[Space]:
        merged: Dict[str, Space] = {}
        for spaces in self._on_every_shard(lambda shard: shard.list_spaces()):
            for space in spaces:
                held = merged.get(space.name)
                merged[space.name] = space if held is None else dataclasses.replace(
                    held, episode_count=held.episode_count + space.episode_count)
        return [merged[name] for name in sorted(merged)]

    def delete_space(self, name: Optional[str] = None) -> int:
        deleted, found = 0, False
        for shard in self.shards:
            try:
                deleted += shard.delete_space(name)
                found = True
            except NotFoundError as error:
                missing = error
        if not found:
            raise missing
        return deleted

    # Episodes -------------------------------------------------------------

    def add(self, text: str, embedding: Optional[Sequence[float]] = None, *,
            request_id: str = "", **fields) -> EpisodeId:
        return self.add_many([dict(text=text, embedding=embedding, request_id=request_id,
                                   **fields)])[0]

    def add_many(self, episodes: Sequence[dict]) -> List[EpisodeId]:
        episodes = [dict(e) for e in episodes]
        generated = []
        groups: Dict[int, List[int]] = {}
        for position, fields in enumerate(episodes):
            generated.append(not fields.get("request_id"))
            fields["request_id"] = fields.get("request_id") or uuid.uuid4().hex
            agent = fields.get("agent") or self.agent or ""
            fields["agent"] = agent
            groups.setdefault(self.owner(agent), []).append(position)
        shards = sorted(groups)
        futures = [self._pool.submit(self.shards[s].add_many, [episodes[p] for p in groups[s]])
                   for s in shards]
        ids: List[Optional[EpisodeId]] = [None] * len(episodes)
        failure = None
        for shard, future in zip(shards, futures):
            try:
                for position, episode_id in zip(groups[shard], future.result()):
                    ids[position] = EpisodeId(
                        episode_id, episode_id.deduplicated and not generated[position],
                        episode_id.replaced)
            except EngramError as error:
                failure = failure or error
        if failure is not None:
            failure.request_ids = [e["request_id"] for e in episodes]
            raise failure
        return ids

    def get(self, episode_id: int = 0, *, key: str = "", agent: Optional[str] = None) -> Episode:
        if key:
            return self.shard_of(agent).get(key=key, agent=agent)
        return self._by_id(episode_id, lambda shard: shard.get(episode_id))

    def update(self, episode_id: int = 0, *, key: str = "", agent: Optional[str] = None,
               expected_version: int = 0, **fields) -> Episode:
        if key:
            return self.shard_of(agent).update(key=key, agent=agent,
                                               expected_version=expected_version, **fields)
        return self._by_id(episode_id, lambda shard: shard.update(
            episode_id, expected_version=expected_version, **fields))

    def history(self, episode_id: int = 0, page_size: int = 100, *, key: str = "",
                agent: Optional[str] = None) -> List[Episode]:
        if key:
            return self.shard_of(agent).history(page_size=page_size, key=key, agent=agent)
        return self._by_id(episode_id, lambda shard: shard.history(episode_id, page_size))

    def delete(self, episode_ids: Union[int, Sequence[int]] = (), *,
               keys: Union[str, Sequence[str]] = (), agent: Optional[str] = None) -> int:
        """By keys: on the agent's shard, all or nothing. By ids: each shard's
        part all or nothing (NotFoundError when an id is on no shard, checked
        before anything is deleted)."""
        if keys:
            return self.shard_of(agent).delete(keys=keys, agent=agent)
        ids = [episode_ids] if isinstance(episode_ids, int) else list(episode_ids)
        holders: Dict[int, List[int]] = {}
        for episode_id in ids:
            index, _ = self._locate(episode_id, lambda shard: shard.get(episode_id))
            holders.setdefault(index, []).append(episode_id)
        return sum(self.shards[s].delete(group) for s, group in sorted(holders.items()))

    def forget_agent(self, agent: Optional[str] = None, session: str = "") -> int:
        return self.shard_of(agent).forget_agent(agent, session)

    def search(self, embedding: Optional[Sequence[float]] = None, k: int = 10, *,
               agent: Optional[str] = None, **options) -> SearchResults:
        """Memory.search's arguments. With an agent (default: this client's),
        on its shard; with agent="", on every shard, the top k merged by
        score (ties: lower id first), `scanned` summed and each shard's
        stages named "shard-<i>/<stage>"."""
        agent = agent if agent is not None else (self.agent or "")
        if agent:
            return self.shard_of(agent).search(embedding, k, agent=agent, **options)
        results = self._on_every_shard(
            lambda shard: shard.search(embedding, k, agent="", **options))
        hits = sorted(itertools.chain.from_iterable(results),
                      key=lambda hit: (-hit.score, hit.episode.id))[:k]
        routes = sorted({r.route for r in results})
        stages = [dataclasses.replace(stage, name=f"{shard_name(i)}/{stage.name}")
                  for i, r in enumerate(results) for stage in r.stages]
        return SearchResults(hits, route=",".join(routes), scanned=sum(r.scanned for r in results),
                             stages=stages, query_terms=results[0].query_terms,
                             policy=results[0].policy)

    def analyze(self, text: str) -> List[str]:
        return self.shards[0].analyze(text)

    def embed(self, text: str) -> List[float]:
        return self.shards[0].embed(text)

    def list(self, *, agent: Optional[str] = None, **options) -> Iterator[Episode]:
        """With an agent, its shard's episodes; with agent="", every shard's,
        shard after shard."""
        agent = agent if agent is not None else (self.agent or "")
        if agent:
            return self.shard_of(agent).list(agent=agent, **options)
        return itertools.chain.from_iterable(
            shard.list(agent="", **options) for shard in self.shards)

    def list_agents(self, page_size: int = 100) -> Iterator[str]:
        """Every shard's agents merged into one byte-ordered list (an agent
        left on two shards by an interrupted move is listed once)."""
        merged = heapq.merge(*(shard.list_agents(page_size) for shard in self.shards))
        return (agent for agent, _ in itertools.groupby(merged))


class ShardedKVCache(_Shards):
    """engram.KVCache over every shard: each call about an agent goes to its
    shard; list() without an agent and stats() ask every shard."""

    def __init__(self, addresses: Sequence[str], model: KVModel, timeout: float = 120.0,
                 **connection):
        self.tenant = _discover(addresses, min(timeout, 30.0), connection)
        self.shards = [KVCache(address, model, timeout=timeout, **connection)
                       for address in addresses]

    def shard_of(self, agent: str) -> KVCache:
        return self.shards[owner_shard(self.tenant, agent, len(self.shards))]

    def save(self, agent: str, *args, **kwargs):
        return self.shard_of(agent).save(agent, *args, **kwargs)

    def save_quantized(self, agent: str, *args, **kwargs):
        return self.shard_of(agent).save_quantized(agent, *args, **kwargs)

    def load(self, agent: str, *args, **kwargs):
        return self.shard_of(agent).load(agent, *args, **kwargs)

    def load_quantized(self, agent: str, *args, **kwargs):
        return self.shard_of(agent).load_quantized(agent, *args, **kwargs)

    def match_prefix(self, agent: str, *args, **kwargs):
        return self.shard_of(agent).match_prefix(agent, *args, **kwargs)

    def delete(self, agent: str, all_models: bool = False) -> int:
        return self.shard_of(agent).delete(agent, all_models)

    def list(self, agent: str = "", page_size: int = 0) -> List[CacheInfo]:
        if agent:
            return self.shard_of(agent).list(agent, page_size)
        return [cache for shard in self.shards for cache in shard.list("", page_size)]

    def stats(self) -> list:
        return [shard.stats() for shard in self.shards]


# Moving an agent ---------------------------------------------------------

_IMPORT_EPISODES = 100
_IMPORT_BYTES = 8 << 20


def move_agent(source: str, target: str, agent: str, *, timeout: float = 120.0,
               **connection) -> dict:
    """Moves an agent's episodes (every space; ids, versions, keys,
    timestamps and history kept) and KV caches from the shard at `source` to
    the one at `target`, then deletes them from the source.

    Run it once both shards have the new shard count (docs/sharding.md,
    "Adding a shard"): the target must own the agent and the source must
    not, so the source refuses the agent's writes while they are copied.
    Copies are checked before the source copy is deleted; a move that
    stops anywhere can be run again (what the target has already is
    skipped), and no acknowledged write is lost. Episodes that expired are
    not moved. Returns counts: {"episodes": {space: n}, "caches": n,
    "deleted_episodes": n, "deleted_caches": n}."""
    with Admin(source, timeout=timeout, **connection) as admin:
        source_info = admin.server_info()
    with Admin(target, timeout=timeout, **connection) as admin:
        target_info = admin.server_info()
    tenant = source_info["tenant"]
    target_count = int(target_info.get("shard_count") or 1)
    target_index = int(target_info.get("shard_index") or 0)
    if owner_shard(tenant, agent, target_count) != target_index:
        raise FailedPreconditionError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"the target {target} (shard {target_index} of {target_count}) does not own agent "
            f"{agent!r}; its owner is shard {owner_shard(tenant, agent, target_count)}")
    source_count = int(source_info.get("shard_count") or 1)
    source_index = int(source_info.get("shard_index") or 0)
    if owner_shard(tenant, agent, source_count) == source_index:
        raise FailedPreconditionError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"the source {source} (shard {source_index} of {source_count}) still owns agent "
            f"{agent!r} and would accept its writes during the move: give it the new "
            f"shard.count first")
    report = {"episodes": {}, "caches": 0, "deleted_episodes": 0, "deleted_caches": 0}
    with Memory(source, timeout=timeout, **connection) as src, \
            Memory(target, timeout=timeout, **connection) as dst:
        try:
            spaces = [space.name for space in src.list_spaces()]
            for space in spaces:
                report["episodes"][space] = _copy_episodes(src, dst, space, agent, timeout)
            report["caches"] = _copy_caches(src, dst, agent, timeout)
            # Only once every copy is checked does the source let go.
            for space in spaces:
                response = src._stub.DeleteEpisodes(memory_pb2.DeleteEpisodesRequest(
                    space=space, agent_id=agent), timeout=timeout, metadata=agent_header(agent))
                report["deleted_episodes"] += response.deleted
            if report["caches"]:
                report["deleted_caches"] = _kv_stub(src).DeleteCache(
                    kvcache_pb2.DeleteCacheRequest(agent_id=agent), timeout=timeout,
                    metadata=agent_header(agent)).caches
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
    return report


def rebalance(addresses: Sequence[str], *, timeout: float = 120.0, **connection) -> dict:
    """Moves every agent that is not on its owner to it (move_agent), for
    the shard count len(addresses): what adding shards needs once every
    engramd runs with the new shard.count (docs/sharding.md). Agents are
    found by their episodes (every space) and their KV caches. Safe to run
    again after an interruption, and a no-op when nothing is misplaced.
    Returns {agent: move_agent's report}."""
    tenant = _discover(addresses, min(timeout, 30.0), connection)
    reports = {}
    for index, address in enumerate(addresses):
        agents = set()
        with Memory(address, timeout=timeout, **connection) as memory:
            for space in memory.list_spaces():
                memory.space = space.name
                agents.update(memory.list_agents(page_size=1000))
            kv, token = _kv_stub(memory), ""
            try:
                while True:
                    page = kv.ListCaches(kvcache_pb2.ListCachesRequest(
                        page_size=1000, page_token=token), timeout=timeout)
                    agents.update(cache.agent_id for cache in page.caches)
                    token = page.next_page_token
                    if not token:
                        break
            except grpc.RpcError as error:
                raise from_rpc_error(error) from None
        for agent in sorted(agents):
            owner = owner_shard(tenant, agent, len(addresses))
            if owner != index:
                reports[agent] = move_agent(address, addresses[owner], agent, timeout=timeout,
                                            **connection)
    return reports


def main(argv=None) -> int:
    import argparse
    import json
    import sys
    parser = argparse.ArgumentParser(
        prog="python3 -m engram.sharding",
        description="Move agents between engramd shards (docs/sharding.md). The token: "
                    "ENGRAM_TOKEN.")
    parser.add_argument("--tls", action="store_true", help="connect with TLS (system roots)")
    parser.add_argument("--tls-ca", default=os.environ.get("ENGRAM_TLS_CA", ""),
                        help="PEM CA bundle to verify the shards with (env ENGRAM_TLS_CA)")
    parser.add_argument("--tls-server-name", default="",
                        help="the name the shards' certificates carry, if not the address's host")
    commands = parser.add_subparsers(dest="command", required=True)
    move = commands.add_parser("move", help="move one agent from a shard to another")
    move.add_argument("--from", dest="source", required=True, help="the source shard's address")
    move.add_argument("--to", dest="target", required=True, help="the target shard's address")
    move.add_argument("--agent", required=True)
    every = commands.add_parser(
        "rebalance", help="move every misplaced agent to its owner (after adding shards)")
    every.add_argument("addresses", nargs="+", help="every shard's address, in shard order")
    owner = commands.add_parser("owner", help="print the shard that owns an agent")
    owner.add_argument("--tenant", default="default")
    owner.add_argument("--shards", type=int, required=True)
    owner.add_argument("agent")
    args = parser.parse_args(argv)
    connection = {}
    if args.tls_ca or args.tls:
        connection.update(tls=True, tls_ca_file=args.tls_ca or None)
    if args.tls_server_name:
        connection["tls_server_name"] = args.tls_server_name
    try:
        if args.command == "move":
            report = move_agent(args.source, args.target, args.agent, **connection)
        elif args.command == "rebalance":
            report = rebalance(args.addresses, **connection)
        else:
            report = {"owner": owner_shard(args.tenant, args.agent, args.shards)}
    except EngramError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=1, sort_keys=True))
    return 0



def _kv_stub(client: Memory):
    return kvcache_pb2_grpc.KVCacheServiceStub(client._channel)


def _ensure_space(src: Memory, dst: Memory, space: str, timeout: float):
    stub = dst._stub
    try:
        stub.GetSpace(memory_pb2.GetSpaceRequest(name=space), timeout=timeout)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
        settings = src._stub.GetSpace(memory_pb2.GetSpaceRequest(name=space),
                                      timeout=timeout).space
        created = memory_pb2.Space()
        created.CopyFrom(settings)
        created.ClearField("episode_count")
        created.ClearField("created_at_us")
        created.text.ClearField("tokenizer")
        try:
            stub.CreateSpace(memory_pb2.CreateSpaceRequest(space=created), timeout=timeout)
        except grpc.RpcError as race:
            if race.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise


def _episode_versions(src: Memory, space: str, episode_id: int, timeout: float) -> list:
    request = memory_pb2.GetHistoryRequest(space=space, id=episode_id, page_size=1000)
    versions = []
    while True:
        response = src._stub.GetHistory(request, timeout=timeout)
        versions.extend(response.versions)
        if not response.next_page_token:
            return versions
        request.page_token = response.next_page_token


def _copy_episodes(src: Memory, dst: Memory, space: str, agent: str, timeout: float) -> int:
    """Imports the agent's episodes of one space into dst; checks dst then
    holds each at its version or later. Returns how many there were."""
    header = agent_header(agent)
    listing = memory_pb2.ListEpisodesRequest(
        space=space, filter=memory_pb2.EpisodeFilter(agent_id=agent), page_size=500)
    expected = {}
    batch = memory_pb2.ImportEpisodesRequest(space=space)

    def flush():
        if batch.episodes:
            dst._stub.ImportEpisodes(batch, timeout=timeout, metadata=header)
            del batch.episodes[:]

    ensured = False
    while True:
        page = src._stub.ListEpisodes(listing, timeout=timeout, metadata=header)
        for listed in page.episodes:
            if not ensured:
                _ensure_space(src, dst, space, timeout)
                ensured = True
            # The history's last version is the current one, read with the
            # rest (the source refuses this agent's writes meanwhile).
            versions = _episode_versions(src, space, listed.id, timeout)
            imported = batch.episodes.add()
            imported.episode.CopyFrom(versions[-1])
            imported.history.extend(versions[:-1])
            expected[listed.id] = versions[-1].version
            if len(batch.episodes) >= _IMPORT_EPISODES or batch.ByteSize() >= _IMPORT_BYTES:
                flush()
        if not page.next_page_token:
            break
        listing.page_token = page.next_page_token
    flush()
    if expected:
        listing.page_token = ""
        held = {}
        while True:
            page = dst._stub.ListEpisodes(listing, timeout=timeout, metadata=header)
            held.update((e.id, e.version) for e in page.episodes)
            if not page.next_page_token:
                break
            listing.page_token = page.next_page_token
        missing = [i for i, version in expected.items() if held.get(i, 0) < version]
        if missing:
            raise EngramError(grpc.StatusCode.DATA_LOSS,
                              f"space {space!r}: the target lacks {len(missing)} of agent "
                              f"{agent!r}'s episodes after the import (e.g. {missing[:5]}); the "
                              f"source copy is kept")
    return len(expected)


def _copy_caches(src: Memory, dst: Memory, agent: str, timeout: float) -> int:
    """Copies every KV cache of the agent as stored (quantized bits, no
    re-quantization); checks the target's token counts. Returns the count."""
    header = agent_header(agent)
    source_kv, target_kv = _kv_stub(src), _kv_stub(dst)
    caches, token = [], ""
    while True:
        page = source_kv.ListCaches(kvcache_pb2.ListCachesRequest(
            agent_id=agent, page_token=token), timeout=timeout, metadata=header)
        caches.extend(page.caches)
        token = page.next_page_token
        if not token:
            break
    for cache in caches:
        stream = source_kv.LoadCache(kvcache_pb2.LoadCacheRequest(
            agent_id=agent, model_id=cache.model.model_id,
            encoding=kvcache_pb2.KV_ENCODING_QUANTIZED), timeout=timeout, metadata=header)

        def requests(stream=stream):
            for message in stream:
                if message.HasField("header"):
                    yield kvcache_pb2.SaveCacheRequest(header=kvcache_pb2.SaveCacheHeader(
                        agent_id=agent, model=message.header.model,
                        token_ids=message.header.token_ids,
                        encoding=kvcache_pb2.KV_ENCODING_QUANTIZED))
                else:
                    yield kvcache_pb2.SaveCacheRequest(block=message.block)

        saved = target_kv.SaveCache(requests(), timeout=timeout, metadata=header)
        if saved.tokens != cache.tokens:
            raise EngramError(grpc.StatusCode.DATA_LOSS,
                              f"KV cache {cache.model.model_id!r} of agent {agent!r}: the target "
                              f"saved {saved.tokens} tokens of {cache.tokens}; the source copy "
                              f"is kept")
    return len(caches)


if __name__ == "__main__":
    raise SystemExit(main())
