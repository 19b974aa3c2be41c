"""The friendly client: `Memory` remembers and recalls an agent's episodes."""

import dataclasses
import time
import uuid
from typing import Dict, Iterator, List, Optional, Sequence, Union

import grpc
import numpy as np

from engram._client import GrpcClient
from engram.errors import InvalidArgumentError, from_rpc_error, translate_errors
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
    (the id is the original write's, and nothing new was stored)."""

    def __new__(cls, value: int, deduplicated: bool = False):
        episode_id = super().__new__(cls, value)
        episode_id.deduplicated = deduplicated
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
        created_at_us=e.created_at_us, updated_at_us=e.updated_at_us)


class Memory(GrpcClient):
    """Remembers and recalls episodes of one space (and by default one agent).

    Every method raises an EngramError subclass on failure (InvalidArgumentError,
    NotFoundError, ...). Safe to share across threads.
    """

    def __init__(self, address: str = "127.0.0.1:50051", space: Optional[str] = None,
                 agent: Optional[str] = None, session: str = "", timeout: float = 30.0,
                 write_attempts: int = 3, **connection):
        """`connection`: token and TLS options (engram._client.GrpcClient)."""
        super().__init__(address, timeout, **connection)
        self.write_attempts = max(1, write_attempts)
        self._space = space
        self.agent = agent
        self.session = session
        self._stub = memory_pb2_grpc.MemoryServiceStub(self._channel)

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

    @translate_errors
    def create_space(self, dimension: int = 0, metric: str = "cosine",
                     name: Optional[str] = None, *, stem_language: str = "",
                     bm25_k1: Optional[float] = None, bm25_b: Optional[float] = None,
                     embedder: str = ""):
        """Creates a space. Its episode text is always indexed for BM25;
        stem_language ("english", ...) turns on Snowball stemming, and
        bm25_k1 / bm25_b change BM25's parameters (defaults 1.2 and 0.75).
        embedder ("static" or "openai", if engramd's configuration offers it)
        lets episodes and searches carry text alone: engramd embeds it; with
        an embedder, dimension 0 takes the embedder's."""
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
        return _space_from_proto(self._stub.CreateSpace(
            memory_pb2.CreateSpaceRequest(space=space), timeout=self.timeout).space)

    @translate_errors
    def get_space(self, name: Optional[str] = None) -> Space:
        return _space_from_proto(self._stub.GetSpace(
            memory_pb2.GetSpaceRequest(name=name or self.space), timeout=self.timeout).space)

    @translate_errors
    def list_spaces(self) -> List[Space]:
        """Every space of the caller's tenant, by name."""
        response = self._stub.ListSpaces(memory_pb2.ListSpacesRequest(), timeout=self.timeout)
        return [_space_from_proto(space) for space in response.spaces]

    @translate_errors
    def delete_space(self, name: Optional[str] = None) -> int:
        return self._stub.DeleteSpace(memory_pb2.DeleteSpaceRequest(name=name or self.space),
                                      timeout=self.timeout).deleted_episodes

    # Episodes -------------------------------------------------------------

    def _episode_proto(self, text="", embedding=None, agent=None, session=None, kind="",
                       metadata=None, event_time_us=0, expires_at_us=0, importance=0.0,
                       links=()):
        episode = memory_pb2.Episode(
            agent_id=agent or self.agent or "", session_id=session or self.session,
            kind=kind, text=text, embedding=_floats(embedding) if embedding is not None else [],
            event_time_us=event_time_us, expires_at_us=expires_at_us,
            importance=importance, links=list(links))
        for key, value in (metadata or {}).items():
            _value_to_proto(value, episode.metadata[key])
        return episode

    @translate_errors
    def add(self, text: str, embedding: Optional[Sequence[float]] = None, *,
            request_id: str = "", **fields) -> EpisodeId:
        """Stores one episode; returns its id (`.deduplicated` when request_id was
        seen before). Without an embedding, the space's embedder computes one
        from the text. `fields`: agent, session, kind, metadata, event_time_us,
        expires_at_us, importance, links."""
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
                response = self._stub.PutEpisodes(request, timeout=self.timeout)
                break
            except grpc.RpcError as rpc_error:
                error = from_rpc_error(rpc_error)
                # Unreachable, or refused for overload with nothing applied.
                retryable = error.code == grpc.StatusCode.UNAVAILABLE or \
                    error.retry_after is not None
                if not retryable or attempt == self.write_attempts:
                    error.request_ids = [e.request_id for e in request.episodes]
                    raise error from None
                time.sleep(max(backoff, error.retry_after or 0))
                backoff *= 2
        # A retry finds the earlier attempt's write: that is this call's own
        # write, not a duplicate the caller sent.
        return [EpisodeId(episode_id, deduplicated and not fresh)
                for episode_id, deduplicated, fresh in
                zip(response.ids, response.deduplicated, generated)]

    @translate_errors
    def get(self, episode_id: int) -> Episode:
        response = self._stub.GetEpisode(
            memory_pb2.GetEpisodeRequest(space=self.space, id=episode_id), timeout=self.timeout)
        return _episode_from_proto(response.episode)

    @translate_errors
    def update(self, episode_id: int, *, expected_version: int = 0, **fields) -> Episode:
        """Replaces the given fields (any of session_id, kind, text, embedding, metadata,
        event_time_us, expires_at_us, importance, links); returns the new version."""
        unknown = set(fields) - set(_UPDATABLE)
        if unknown:
            raise InvalidArgumentError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"cannot update {sorted(unknown)}")
        values = memory_pb2.Episode()
        for name, value in fields.items():
            if name == "metadata":
                for key, v in value.items():
                    _value_to_proto(v, values.metadata[key])
            elif name in ("embedding", "links"):
                getattr(values, name).extend(value)
            else:
                setattr(values, name, value)
        request = memory_pb2.UpdateEpisodeRequest(
            space=self.space, id=episode_id, expected_version=expected_version,
            episode=values, update_mask=sorted(fields))
        return _episode_from_proto(self._stub.UpdateEpisode(request,
                                                            timeout=self.timeout).episode)

    @translate_errors
    def history(self, episode_id: int, page_size: int = 100) -> List[Episode]:
        """Every version, oldest first, ending with the current one (fetched
        page_size versions a call, so a long history never exceeds a message)."""
        request = memory_pb2.GetHistoryRequest(space=self.space, id=episode_id,
                                               page_size=page_size)
        versions = []
        while True:
            response = self._stub.GetHistory(request, timeout=self.timeout)
            versions.extend(_episode_from_proto(e) for e in response.versions)
            if not response.next_page_token:
                return versions
            request.page_token = response.next_page_token

    @translate_errors
    def delete(self, episode_ids: Union[int, Sequence[int]]) -> int:
        ids = [episode_ids] if isinstance(episode_ids, int) else list(episode_ids)
        request = memory_pb2.DeleteEpisodesRequest(
            space=self.space, ids=memory_pb2.DeleteEpisodesRequest.Ids(ids=ids))
        return self._stub.DeleteEpisodes(request, timeout=self.timeout).deleted

    @translate_errors
    def forget_agent(self, agent: Optional[str] = None, session: str = "") -> int:
        """Deletes every episode of the agent (or only of one of its sessions)."""
        agent = agent or self.agent
        if session:
            request = memory_pb2.DeleteEpisodesRequest(
                space=self.space,
                session=memory_pb2.DeleteEpisodesRequest.Session(agent_id=agent,
                                                                 session_id=session))
        else:
            request = memory_pb2.DeleteEpisodesRequest(space=self.space, agent_id=agent)
        return self._stub.DeleteEpisodes(request, timeout=self.timeout).deleted

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

    @translate_errors
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
        May"); 0: engramd's clock. results.explain() has the whole story."""
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
        response = self._stub.Search(request, timeout=self.timeout)
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

    @translate_errors
    def analyze(self, text: str) -> List[str]:
        """The terms `text` becomes in this space's lexical index, in order:
        what BM25 stores for an episode with this text and what a text query
        is searched as."""
        return list(self._stub.AnalyzeText(
            memory_pb2.AnalyzeTextRequest(space=self.space, text=text),
            timeout=self.timeout).terms)

    @translate_errors
    def embed(self, text: str) -> List[float]:
        """The vector this space's embedder makes of `text`: what a text-only
        episode stores and a text-only search queries with."""
        return list(self._stub.AnalyzeText(
            memory_pb2.AnalyzeTextRequest(space=self.space, text=text, embed=True),
            timeout=self.timeout).embedding)

    @translate_errors
    def list(self, *, agent: Optional[str] = None, session: str = "", kinds=None,
             since_us=None, until_us=None, where=None, page_size: int = 100,
             include_embedding: bool = False) -> Iterator[Episode]:
        """Every matching episode, fetched a page at a time as the result is
        iterated (arguments are checked at the first page)."""
        request = memory_pb2.ListEpisodesRequest(
            space=self.space,
            filter=self._filter(agent, session, kinds, since_us, until_us, where),
            page_size=page_size, include_embedding=include_embedding)
        return self._pages(request)

    def _pages(self, request) -> Iterator[Episode]:
        list_page = translate_errors(
            lambda: self._stub.ListEpisodes(request, timeout=self.timeout))
        while True:
            response = list_page()
            for episode in response.episodes:
                yield _episode_from_proto(episode)
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token
