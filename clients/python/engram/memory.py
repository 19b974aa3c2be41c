"""The friendly client: `Memory` remembers and recalls an agent's episodes."""

import dataclasses
import time
import urllib.parse
import uuid
from typing import Any, Dict, Generator, Iterator, List, Optional, Sequence, Union

import grpc
import numpy as np

from engram._client import GrpcClient
from engram.errors import InvalidArgumentError, from_rpc_error
from engram.v1 import memory_pb2, memory_pb2_grpc

MetadataValue = Union[str, int, float, bool]

_METRICS = {
    "cosine": memory_pb2.METRIC_COSINE,
    "ip": memory_pb2.METRIC_INNER_PRODUCT,
    "inner_product": memory_pb2.METRIC_INNER_PRODUCT,
    "l2": memory_pb2.METRIC_L2,
}
_OPS = {
    "==": memory_pb2.MetadataPredicate.EQ,
    "!=": memory_pb2.MetadataPredicate.NE,
    "<": memory_pb2.MetadataPredicate.LT,
    "<=": memory_pb2.MetadataPredicate.LE,
    ">": memory_pb2.MetadataPredicate.GT,
    ">=": memory_pb2.MetadataPredicate.GE,
    "exists": memory_pb2.MetadataPredicate.EXISTS,
}
_UPDATABLE = ("session_id", "kind", "text", "embedding", "metadata", "event_time_us",
              "expires_at_us", "importance", "links")


@dataclasses.dataclass
class Episode:
    id: int
    agent_id: str
    session_id: str
    kind: str
    text: str
    embedding: List[float]
    metadata: Dict[str, MetadataValue]
    event_time_us: int
    expires_at_us: int
    importance: float
    links: List[int]
    version: int
    created_at_us: int
    updated_at_us: int
    key: str = ""  # the caller's key, unique within (space, agent); "" for none


@dataclasses.dataclass
class SourceRank:
    """Where a hybrid hit ranked in one source's list: source ("vector" or
    "lexical"), rank (from 1) and that source's own score."""
    source: str
    rank: int
    score: float


@dataclasses.dataclass
class Hit:
    """score: the similarity (vector search), BM25 (text search) or the
    reciprocal rank fusion score (hybrid, where `sources` says how each
    list ranked the episode)."""
    score: float
    episode: Episode
    sources: List[SourceRank] = dataclasses.field(default_factory=list)


class EpisodeId(int):
    """An episode id as add() and add_many() return it: an int, with
    `deduplicated` True when the write's request_id had been applied before
    (the id is the original write's, and nothing new was stored), and
    `replaced` True when the write's key named an existing episode, which it
    replaced (the id is that episode's)."""

    deduplicated: bool
    replaced: bool

    def __new__(cls, value: int, deduplicated: bool = False, replaced: bool = False):
        episode_id = super().__new__(cls, value)
        episode_id.deduplicated = deduplicated
        episode_id.replaced = replaced
        return episode_id


@dataclasses.dataclass
class Space:
    name: str
    dimension: int
    metric: str  # "cosine", "ip" or "l2"
    created_at_us: int
    episode_count: int
    stem_language: str = ""  # Snowball stemming of the lexical index ("" none)
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    tokenizer: str = ""  # the tokenizer scheme its postings were built with
    embedder: str = ""  # "static" or "openai": engramd embeds text ("" none)


@dataclasses.dataclass
class Stage:
    """One step of a search: a candidate source ("index", "scan", "lexical"),
    the read-back ("hydrate"), the exact scan ("exact"), the fusion ("fuse"),
    the quality gate ("gate") or a stage of deliberation ("scan", "lexical",
    "time", "context", "fuse", "rerank"). `kept`: what it passed on;
    `budget_micros`: its share of the deadline (deliberation); `note`: the
    time expression read, or why it was cut."""
    name: str
    candidates: int
    micros: int
    kept: int = 0
    budget_micros: int = 0
    note: str = ""


@dataclasses.dataclass
class GateSignal:
    """One input of the quality gate: contribution = value * weight."""
    name: str
    value: float
    weight: float
    contribution: float


@dataclasses.dataclass
class GateDecision:
    """The quality gate's verdict on the fast answer (route "auto"):
    escalated when score (a probability) >= threshold; `reason` names the
    signals that decided."""
    escalated: bool
    score: float
    threshold: float
    signals: List[GateSignal]
    reason: str
    micros: int


class SearchResults(list):
    """The hits of a search, best first (a list of Hit), with how they were
    found: `route` (what answered: "index", "scan", "exact", "lexical",
    "hybrid" or "deliberate"), `policy` (what decided: "auto", "fast" or
    "deliberate"), `gate` (route auto: the quality gate's GateDecision, else
    None), `scanned` (candidates proposed or episodes scored), `stages` (each
    step's candidates and time) and `query_terms` (the words a text query was
    searched as). `explain()` returns all of it as plain data."""

    def __init__(self, hits, route: str, scanned: int, stages: List[Stage],
                 query_terms: Optional[List[str]] = None, policy: str = "",
                 gate: Optional[GateDecision] = None):
        super().__init__(hits)
        self.route = route
        self.scanned = scanned
        self.stages = stages
        self.query_terms = query_terms or []
        self.policy = policy
        self.gate = gate

    def explain(self) -> dict:
        """The route taken, the gate's decision with every signal, each
        stage's time and candidates, and each hit's sources with their ranks
        and scores: dicts and lists only (json.dumps takes it)."""
        return {
            "route": self.route,
            "policy": self.policy,
            "gate": dataclasses.asdict(self.gate) if self.gate else None,
            "stages": [dataclasses.asdict(stage) for stage in self.stages],
            "query_terms": list(self.query_terms),
            "hits": [{"id": int(hit.episode.id), "score": hit.score,
                      "sources": [dataclasses.asdict(s) for s in hit.sources]}
                     for hit in self],
        }


_METRIC_NAMES = {
    memory_pb2.METRIC_COSINE: "cosine",
    memory_pb2.METRIC_INNER_PRODUCT: "ip",
    memory_pb2.METRIC_L2: "l2",
}


def _space_from_proto(space) -> Space:
    return Space(name=space.name, dimension=space.dimension,
                 metric=_METRIC_NAMES.get(space.metric, "unknown"),
                 created_at_us=space.created_at_us, episode_count=space.episode_count,
                 stem_language=space.text.stem_language,
                 bm25_k1=space.text.bm25_k1 if space.text.HasField("bm25_k1") else 1.2,
                 bm25_b=space.text.bm25_b if space.text.HasField("bm25_b") else 0.75,
                 tokenizer=space.text.tokenizer, embedder=space.embedder)


def _floats(values) -> List[float]:
    """A vector as the list of floats protobuf takes, converted in C (numpy)
    rather than element by element: a third of the client's time per search
    went to a Python loop over 768 values."""
    try:
        return np.asarray(values, dtype=np.float32).ravel().tolist()
    except (TypeError, ValueError) as error:
        raise InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"a vector must be numbers: {error}") from None


def _value_to_proto(value, out):
    # bool first: bool is a subclass of int in Python.
    if isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        out.int_value = value
    elif isinstance(value, float):
        out.double_value = value
    elif isinstance(value, str):
        out.string_value = value
    else:
        raise InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"metadata value {value!r} is not str, int, float or bool")


def _value_from_proto(value):
    return getattr(value, value.WhichOneof("kind"))


def _episode_from_proto(e) -> Episode:
    return Episode(
        id=e.id, agent_id=e.agent_id, session_id=e.session_id, kind=e.kind, text=e.text,
        embedding=list(e.embedding),
        metadata={k: _value_from_proto(v) for k, v in e.metadata.items()},
        event_time_us=e.event_time_us, expires_at_us=e.expires_at_us,
        importance=e.importance, links=list(e.links), version=e.version,
        created_at_us=e.created_at_us, updated_at_us=e.updated_at_us, key=e.key)


# The request header naming the one agent a call is about, so that a proxy
# in front of sharded engramds can route by agent (docs/sharding.md). Its
# value is the agent id's UTF-8 bytes percent-encoded: header values must be
# printable ASCII and agent ids may hold any bytes.
AGENT_HEADER = "x-engram-agent"


def agent_of(request) -> str:
    """The one agent `request` is about, or "" (several, or none)."""
    if isinstance(request, memory_pb2.PutEpisodesRequest):
        agents = {w.episode.agent_id for w in request.episodes}
        return agents.pop() if len(agents) == 1 else ""
    if isinstance(request, (memory_pb2.GetEpisodeRequest, memory_pb2.UpdateEpisodeRequest,
                            memory_pb2.GetHistoryRequest)):
        return request.key.agent_id if request.HasField("key") else ""
    if isinstance(request, memory_pb2.DeleteEpisodesRequest):
        target = request.WhichOneof("target")
        if target == "agent_id":
            return request.agent_id
        if target in ("session", "keys"):
            return getattr(request, target).agent_id
        return ""
    if isinstance(request, (memory_pb2.SearchRequest, memory_pb2.ListEpisodesRequest)):
        return request.filter.agent_id
    if isinstance(request, memory_pb2.ImportEpisodesRequest):
        agents = {e.episode.agent_id for e in request.episodes}
        return agents.pop() if len(agents) == 1 else ""
    return ""


_AGENT_HEADER_MAX = 1024


def agent_header(agent: str) -> tuple:
    """((AGENT_HEADER, encoded agent),) for a call about `agent`; () for ""
    and for ids too long to be valid (engramd refuses those with a clear
    message, which an oversized header would replace with gRPC's own)."""
    encoded = urllib.parse.quote(agent.encode("utf-8"), safe="") if agent else ""
    return ((AGENT_HEADER, encoded),) if 0 < len(encoded) <= _AGENT_HEADER_MAX else ()


def agent_metadata(request) -> tuple:
    """agent_header of the one agent `request` is about, else ()."""
    return agent_header(agent_of(request))


class _MemoryOperations:
    """Every Memory operation, written once for the synchronous client
    (Memory) and the asyncio one (engram.aio.Memory).

    An operation is a generator: it yields ("RpcName", request) and receives
    the response (or has the grpc.RpcError thrown into it), yields ("sleep",
    seconds) to wait, and returns its result. Each client's driver runs it
    on its own kind of channel and turns the gRPC errors that escape into
    EngramError subclasses."""

    def _init_scope(self, space, agent, session, write_attempts):
        self.write_attempts = max(1, write_attempts)
        self._space = space
        self.agent = agent
        self.session = session

    @property
    def space(self) -> str:
        """The space this Memory works in; InvalidArgumentError when none was given."""
        if not self._space:
            raise InvalidArgumentError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "no space given: pass space= to Memory(...) or set memory.space")
        return self._space

    @space.setter
    def space(self, name: str):
        self._space = name

    # Spaces ---------------------------------------------------------------

    def _create_space(self, dimension, metric, name, stem_language, bm25_k1, bm25_b, embedder):
        if metric not in _METRICS:
            raise InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"metric {metric!r} is not one of {sorted(_METRICS)}")
        text = memory_pb2.TextIndex(stem_language=stem_language)
        if bm25_k1 is not None:
            text.bm25_k1 = bm25_k1
        if bm25_b is not None:
            text.bm25_b = bm25_b
        space = memory_pb2.Space(name=name or self.space, dimension=dimension,
                                 metric=_METRICS[metric], text=text, embedder=embedder)
        response = yield "CreateSpace", memory_pb2.CreateSpaceRequest(space=space)
        return _space_from_proto(response.space)

    def _get_space(self, name):
        response = yield "GetSpace", memory_pb2.GetSpaceRequest(name=name or self.space)
        return _space_from_proto(response.space)

    def _list_spaces(self):
        response = yield "ListSpaces", memory_pb2.ListSpacesRequest()
        return [_space_from_proto(space) for space in response.spaces]

    def _delete_space(self, name):
        response = yield "DeleteSpace", memory_pb2.DeleteSpaceRequest(name=name or self.space)
        return response.deleted_episodes

    # Episodes -------------------------------------------------------------

    def _episode_proto(self, text="", embedding=None, agent=None, session=None, kind="",
                       metadata=None, event_time_us=0, expires_at_us=0, importance=0.0,
                       links=(), key=""):
        episode = memory_pb2.Episode(
            agent_id=agent or self.agent or "", session_id=session or self.session,
            kind=kind, text=text, embedding=_floats(embedding) if embedding is not None else [],
            event_time_us=event_time_us, expires_at_us=expires_at_us,
            importance=importance, links=list(links), key=key)
        for name, value in (metadata or {}).items():
            _value_to_proto(value, episode.metadata[name])
        return episode

    def _add_many(self, episodes):
        request = memory_pb2.PutEpisodesRequest(space=self.space)
        generated = []
        for fields in episodes:
            fields = dict(fields)
            request_id = fields.pop("request_id", "")
            generated.append(not request_id)
            request.episodes.add(request_id=request_id or uuid.uuid4().hex,
                                 episode=self._episode_proto(**fields))
        backoff = 0.1
        for attempt in range(1, self.write_attempts + 1):
            try:
                response = yield "PutEpisodes", request
                break
            except grpc.RpcError as rpc_error:
                error = from_rpc_error(rpc_error)
                # Unreachable, or refused for overload with nothing applied.
                retryable = error.code == grpc.StatusCode.UNAVAILABLE or \
                    error.retry_after is not None
                if not retryable or attempt == self.write_attempts:
                    error.request_ids = [e.request_id for e in request.episodes]
                    raise error from None
                yield "sleep", max(backoff, error.retry_after or 0)
                backoff *= 2
        # A retry finds the earlier attempt's write: that is this call's own
        # write, not a duplicate the caller sent.
        replaced = list(response.replaced) or [False] * len(response.ids)
        return [EpisodeId(episode_id, deduplicated and not fresh, was_replaced)
                for episode_id, deduplicated, fresh, was_replaced in
                zip(response.ids, response.deduplicated, generated, replaced)]

    def _named(self, episode_id, key, agent):
        """(id, EpisodeKey or None) for a method that takes either."""
        if key:
            if episode_id:
                raise InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT,
                                           "name the episode by id or by key, not both")
            return 0, memory_pb2.EpisodeKey(agent_id=agent or self.agent or "", key=key)
        if not episode_id:
            raise InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT,
                                       "name the episode: an id, or key= (with the agent)")
        return episode_id, None

    def _get(self, episode_id, key, agent):
        episode_id, named_key = self._named(episode_id, key, agent)
        response = yield "GetEpisode", memory_pb2.GetEpisodeRequest(
            space=self.space, id=episode_id, key=named_key)
        return _episode_from_proto(response.episode)

    def _update(self, episode_id, key, agent, expected_version, fields):
        episode_id, named_key = self._named(episode_id, key, agent)
        unknown = set(fields) - set(_UPDATABLE)
        if unknown:
            raise InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"cannot update {sorted(unknown)}")
        values = memory_pb2.Episode()
        for name, value in fields.items():
            if name == "metadata":
                for entry, v in value.items():
                    _value_to_proto(v, values.metadata[entry])
            elif name == "embedding":
                values.embedding.extend(_floats(value))
            elif name == "links":
                values.links.extend(value)
            else:
                setattr(values, name, value)
        request = memory_pb2.UpdateEpisodeRequest(
            space=self.space, id=episode_id, key=named_key, expected_version=expected_version,
            episode=values, update_mask=sorted(fields))
        response = yield "UpdateEpisode", request
        return _episode_from_proto(response.episode)

    def _history(self, episode_id, page_size, key, agent):
        episode_id, named_key = self._named(episode_id, key, agent)
        request = memory_pb2.GetHistoryRequest(space=self.space, id=episode_id, key=named_key,
                                               page_size=page_size)
        versions = []
        while True:
            response = yield "GetHistory", request
            versions.extend(_episode_from_proto(e) for e in response.versions)
            if not response.next_page_token:
                return versions
            request.page_token = response.next_page_token

    def _delete(self, episode_ids, keys, agent):
        if keys:
            if episode_ids:
                raise InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT,
                                           "delete by ids or by keys, not both")
            keys = [keys] if isinstance(keys, str) else list(keys)
            request = memory_pb2.DeleteEpisodesRequest(
                space=self.space, keys=memory_pb2.DeleteEpisodesRequest.Keys(
                    agent_id=agent or self.agent or "", keys=keys))
        else:
            ids = [episode_ids] if isinstance(episode_ids, int) else list(episode_ids)
            request = memory_pb2.DeleteEpisodesRequest(
                space=self.space, ids=memory_pb2.DeleteEpisodesRequest.Ids(ids=ids))
        response = yield "DeleteEpisodes", request
        return response.deleted

    def _forget_agent(self, agent, session):
        agent = agent or self.agent
        if session:
            request = memory_pb2.DeleteEpisodesRequest(
                space=self.space,
                session=memory_pb2.DeleteEpisodesRequest.Session(agent_id=agent,
                                                                 session_id=session))
        else:
            request = memory_pb2.DeleteEpisodesRequest(space=self.space, agent_id=agent)
        response = yield "DeleteEpisodes", request
        return response.deleted

    def _filter(self, agent, session, kinds, since_us, until_us, where):
        f = memory_pb2.EpisodeFilter(agent_id=agent if agent is not None else (self.agent or ""),
                                     session_id=session, kinds=list(kinds or []))
        if since_us is not None:
            f.event_time_from_us = since_us
        if until_us is not None:
            f.event_time_to_us = until_us
        # where: {"key": value} (equality) or [("key", op, value), ...]
        items = where.items() if isinstance(where, dict) else (where or [])
        for item in items:
            key, op, value = (item[0], "==", item[1]) if len(item) == 2 else item
            if op not in _OPS:
                raise InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT,
                                           f"operator {op!r} is not one of {sorted(_OPS)}")
            predicate = f.metadata.add(key=key, op=_OPS[op])
            if op != "exists":
                _value_to_proto(value, predicate.value)
        return f

    def _search(self, embedding, k, text, agent, session, kinds, since_us, until_us, where,
                include_embedding, beam_width, exact, scan, route, reference_time_us):
        routes = {"auto": memory_pb2.ROUTE_AUTO, "fast": memory_pb2.ROUTE_FAST,
                  "deliberate": memory_pb2.ROUTE_DELIBERATE}
        if route not in routes:
            raise ValueError(f"route {route!r} is not one of {sorted(routes)}")
        request = memory_pb2.SearchRequest(
            space=self.space, query=_floats(embedding) if embedding is not None else [], k=k,
            query_text=text or "",
            filter=self._filter(agent, session, kinds, since_us, until_us, where),
            include_embedding=include_embedding, beam_width=beam_width, exact=exact, scan=scan,
            route=routes[route], reference_time_us=reference_time_us)
        response = yield "Search", request
        hits = [Hit(h.score, _episode_from_proto(h.episode),
                    [SourceRank(s.source, s.rank, s.score) for s in h.sources])
                for h in response.hits]
        gate = None
        if response.HasField("gate"):
            g = response.gate
            gate = GateDecision(g.escalated, g.score, g.threshold,
                                [GateSignal(s.name, s.value, s.weight, s.contribution)
                                 for s in g.signals], g.reason, g.micros)
        return SearchResults(hits, route=response.route, scanned=response.scanned,
                             stages=[Stage(s.name, s.candidates, s.micros, s.kept,
                                           s.budget_micros, s.note)
                                     for s in response.stages],
                             query_terms=list(response.query_terms), policy=response.policy,
                             gate=gate)

    def _analyze(self, text, embed):
        response = yield "AnalyzeText", memory_pb2.AnalyzeTextRequest(
            space=self.space, text=text, embed=embed)
        return list(response.embedding) if embed else list(response.terms)

    def _list_request(self, agent, session, kinds, since_us, until_us, where, page_size,
                      include_embedding):
        return memory_pb2.ListEpisodesRequest(
            space=self.space,
            filter=self._filter(agent, session, kinds, since_us, until_us, where),
            page_size=page_size, include_embedding=include_embedding)

    def _list_agents_page(self, page_size, page_token):
        """One page of agent ids: (agent_ids, next_page_token)."""
        response = yield "ListAgents", memory_pb2.ListAgentsRequest(
            space=self.space, page_size=page_size, page_token=page_token)
        return list(response.agent_ids), response.next_page_token

    def _list_page(self, request):
        """One page: (episodes, next_page_token)."""
        response = yield "ListEpisodes", request
        return [_episode_from_proto(e) for e in response.episodes], response.next_page_token


class Memory(_MemoryOperations, GrpcClient):
    """Remembers and recalls episodes of one space (and by default one agent).

    Every method raises an EngramError subclass on failure (InvalidArgumentError,
    NotFoundError, ...). Safe to share across threads. engram.aio.Memory is
    the same client for asyncio.
    """

    def __init__(self, address: str = "127.0.0.1:50051", space: Optional[str] = None,
                 agent: Optional[str] = None, session: str = "", timeout: float = 30.0,
                 write_attempts: int = 3, **connection):
        """`connection`: token and TLS options (engram._client.GrpcClient)."""
        super().__init__(address, timeout, **connection)
        self._init_scope(space, agent, session, write_attempts)
        self._stub = memory_pb2_grpc.MemoryServiceStub(self._channel)

    def _run(self, operation: Generator) -> Any:
        """Runs an operation (see _MemoryOperations) on this blocking channel."""
        try:
            step = next(operation)
            while True:
                name, argument = step
                if name == "sleep":
                    time.sleep(argument)
                    step = operation.send(None)
                    continue
                try:
                    response = getattr(self._stub, name)(
                        argument, timeout=self.timeout, metadata=agent_metadata(argument))
                except grpc.RpcError as error:
                    step = operation.throw(error)
                else:
                    step = operation.send(response)
        except StopIteration as done:
            return done.value
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    # Spaces ---------------------------------------------------------------

    def create_space(self, dimension: int = 0, metric: str = "cosine",
                     name: Optional[str] = None, *, stem_language: str = "",
                     bm25_k1: Optional[float] = None, bm25_b: Optional[float] = None,
                     embedder: str = "") -> Space:
        """Creates a space. Its episode text is always indexed for BM25;
        stem_language ("english", ...) turns on Snowball stemming, and
        bm25_k1 / bm25_b change BM25's parameters (defaults 1.2 and 0.75).
        embedder ("static" or "openai", if engramd's configuration offers it)
        lets episodes and searches carry text alone: engramd embeds it; with
        an embedder, dimension 0 takes the embedder's."""
        return self._run(self._create_space(dimension, metric, name, stem_language, bm25_k1,
                                            bm25_b, embedder))

    def get_space(self, name: Optional[str] = None) -> Space:
        return self._run(self._get_space(name))

    def list_spaces(self) -> List[Space]:
        """Every space of the caller's tenant, by name."""
        return self._run(self._list_spaces())

    def delete_space(self, name: Optional[str] = None) -> int:
        return self._run(self._delete_space(name))

    # Episodes -------------------------------------------------------------

    def add(self, text: str, embedding: Optional[Sequence[float]] = None, *,
            request_id: str = "", **fields) -> EpisodeId:
        """Stores one episode; returns its id (`.deduplicated` when request_id was
        seen before). Without an embedding, the space's embedder computes one
        from the text. `fields`: agent, session, kind, metadata, event_time_us,
        expires_at_us, importance, links, key. With a key the agent already
        holds, the write replaces that episode (an upsert: same id, the next
        version, `.replaced` set)."""
        return self.add_many([dict(text=text, embedding=embedding, request_id=request_id,
                                   **fields)])[0]

    def add_many(self, episodes: Sequence[dict]) -> List[EpisodeId]:
        """Stores a batch all-or-nothing; each dict holds add()'s arguments.

        Safe to retry: an episode without a request_id gets a random one, so
        when engramd is unreachable (UNAVAILABLE) or refuses the batch for
        overload (ResourceExhaustedError with `retry_after`; not a full disk
        or a tenant limit), the batch is sent again, after the server's delay
        or a doubling backoff from 0.1 s, up to `write_attempts` times in all,
        and is applied at most once. If the
        call still fails, the error's `request_ids` are the ids sent: pass
        them back with the same episodes to retry by hand (a call that timed
        out may have been applied; the retry then returns the original ids).
        An id whose request_id was generated here reports `deduplicated` only
        if a write before this call had used it, which cannot happen."""
        return self._run(self._add_many(episodes))

    def get(self, episode_id: int = 0, *, key: str = "", agent: Optional[str] = None) -> Episode:
        """The episode with this id, or the one the agent (default: this
        Memory's) stored under `key`."""
        return self._run(self._get(episode_id, key, agent))

    def update(self, episode_id: int = 0, *, key: str = "", agent: Optional[str] = None,
               expected_version: int = 0, **fields) -> Episode:
        """Replaces the given fields (any of session_id, kind, text, embedding, metadata,
        event_time_us, expires_at_us, importance, links) of the episode named by
        id or by key; returns the new version."""
        return self._run(self._update(episode_id, key, agent, expected_version, fields))

    def history(self, episode_id: int = 0, page_size: int = 100, *, key: str = "",
                agent: Optional[str] = None) -> List[Episode]:
        """Every version, oldest first, ending with the current one (fetched
        page_size versions a call, so a long history never exceeds a message).
        The episode is named by id or by key."""
        return self._run(self._history(episode_id, page_size, key, agent))

    def delete(self, episode_ids: Union[int, Sequence[int]] = (), *,
               keys: Union[str, Sequence[str]] = (), agent: Optional[str] = None) -> int:
        """Deletes episodes by ids, or by the agent's keys (default agent:
        this Memory's); all must exist, else NotFoundError and nothing is
        deleted. Returns the count."""
        return self._run(self._delete(episode_ids, keys, agent))

    def forget_agent(self, agent: Optional[str] = None, session: str = "") -> int:
        """Deletes every episode of the agent (or only of one of its sessions)."""
        return self._run(self._forget_agent(agent, session))

    def search(self, embedding: Optional[Sequence[float]] = None, k: int = 10, *,
               text: Optional[str] = None, agent: Optional[str] = None,
               session: str = "", kinds=None, since_us=None, until_us=None, where=None,
               include_embedding: bool = False, beam_width: int = 0,
               exact: bool = False, scan: bool = False, route: str = "auto",
               reference_time_us: int = 0) -> SearchResults:
        """The k best episodes, best first: closest to `embedding`, best by BM25
        for `text`, or, given both, the two lists fused by reciprocal rank
        (route "hybrid"; each hit's `sources` says where it ranked). In a
        space with an embedder, `text` alone is embedded too (hybrid). agent=""
        searches the whole space; the default is this Memory's agent.
        beam_width widens the index's graph search (0: the index's calibrated
        default); exact=True scores every episode instead of using the index;
        scan=True scans every vector in memory (on engramd's GPU when it has
        one) instead of the graph. Otherwise `route` decides: "auto" (the
        fast path, escalated to full deliberation when engramd's quality gate
        does not trust it; results.gate says why), "fast" or "deliberate".
        reference_time_us is "now" for time expressions in `text` ("last
        May"); 0: engramd's clock. where: {"key": value} or [("key", op,
        value), ...] with op one of == != < <= > >= exists.
        results.explain() has the whole story."""
        return self._run(self._search(embedding, k, text, agent, session, kinds, since_us,
                                      until_us, where, include_embedding, beam_width, exact,
                                      scan, route, reference_time_us))

    def analyze(self, text: str) -> List[str]:
        """The terms `text` becomes in this space's lexical index, in order:
        what BM25 stores for an episode with this text and what a text query
        is searched as."""
        return self._run(self._analyze(text, False))

    def embed(self, text: str) -> List[float]:
        """The vector this space's embedder makes of `text`: what a text-only
        episode stores and a text-only search queries with."""
        return self._run(self._analyze(text, True))

    def list(self, *, agent: Optional[str] = None, session: str = "", kinds=None,
             since_us=None, until_us=None, where=None, page_size: int = 100,
             include_embedding: bool = False) -> Iterator[Episode]:
        """Every matching episode, fetched a page at a time as the result is
        iterated (arguments are checked here, before the first page)."""
        request = self._list_request(agent, session, kinds, since_us, until_us, where,
                                     page_size, include_embedding)
        return self._pages(request)

    def _pages(self, request) -> Iterator[Episode]:
        while True:
            episodes, token = self._run(self._list_page(request))
            yield from episodes
            if not token:
                return
            request.page_token = token

    def list_agents(self, page_size: int = 100) -> Iterator[str]:
        """The agents holding episodes in this space, in byte order of their
        ids, fetched a page at a time as the result is iterated."""
        token = ""
        while True:
            agents, token = self._run(self._list_agents_page(page_size, token))
            yield from agents
            if not token:
                return
