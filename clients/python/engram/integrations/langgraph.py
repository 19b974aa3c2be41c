"""LangGraph's long-term memory store on Engram: `EngramStore` is shaped
like `langgraph.store.base.BaseStore` (batch and abatch over GetOp, PutOp,
SearchOp and ListNamespacesOp, and the get, put, search, delete and
list_namespaces helpers with their async twins), so a graph compiled with
`store=EngramStore(...)` keeps its memories in engramd.

LangGraph is not imported to run this; when it is installed, EngramStore is
registered as a virtual subclass of its BaseStore, and LangGraph's own op
objects are accepted wherever these are.

How items map onto episodes (one space, "langgraph" by default):
- namespace ("users", "42", "memories") -> agent id "users.42.memories"
  (LangGraph forbids "." in labels, so the join is unambiguous); the labels
  are also metadata ns.0, ns.1, ... so a namespace prefix is a filter;
- key -> the episode's key: put() upserts, a new version each time, the
  old ones kept in engramd's history;
- value -> the episode text as JSON (what get() returns), and each
  top-level scalar field as metadata "v.<field>", which filters match;
- index -> one vector per item, embedded by the store's `index` config
  from the text at its fields (several fields or array paths are joined
  with newlines and embedded once; LangGraph's own stores keep one vector
  per path); index=False stores the item unsearchable by query;
- ttl (minutes) -> the episode's expiry, pushed forward on reads when
  refresh_ttl asks for it and half the TTL has passed (each push is an
  update, a new version: pushing on every read would grow the history
  with every get).

Search with `query`: by vector when the store has an index config (scores
are cosine similarities: vectors are normalised and the space uses inner
product), else by BM25 over the items' text. Without a query, items come in
namespace order, then oldest first.
"""

import asyncio
import json
import math
import time
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from engram.errors import AlreadyExistsError, NotFoundError
from engram.integrations._filters import is_scalar, predicates
from engram.memory import Episode, Memory

__all__ = ["EngramStore", "GetOp", "InvalidNamespaceError", "Item", "ListNamespacesOp",
           "MatchCondition", "PutOp", "SearchItem", "SearchOp"]


class Item:
    """A stored item: value (a dict), key, namespace (a tuple of labels),
    created_at and updated_at (timezone-aware datetimes)."""

    __slots__ = ("value", "key", "namespace", "created_at", "updated_at")

    def __init__(self, *, value: Dict[str, Any], key: str, namespace: Tuple[str, ...],
                 created_at: datetime, updated_at: datetime):
        self.value = value
        self.key = key
        self.namespace = tuple(namespace)
        self.created_at = created_at
        self.updated_at = updated_at

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Item):
            return False
        return (self.value, self.key, self.namespace, self.created_at, self.updated_at) == \
            (other.value, other.key, other.namespace, other.created_at, other.updated_at)

    def __hash__(self) -> int:
        return hash((self.namespace, self.key))

    def dict(self) -> dict:
        return {"value": self.value, "key": self.key, "namespace": list(self.namespace),
                "created_at": self.created_at.isoformat(),
                "updated_at": self.updated_at.isoformat()}

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self.dict().items())
        return f"{type(self).__name__}({fields})"


class SearchItem(Item):
    """An item found by search, with its score (None when no query ranked it)."""

    __slots__ = ("score",)

    def __init__(self, namespace: Tuple[str, ...], key: str, value: Dict[str, Any],
                 created_at: datetime, updated_at: datetime, score: Optional[float] = None):
        super().__init__(value=value, key=key, namespace=namespace, created_at=created_at,
                         updated_at=updated_at)
        self.score = score

    def __eq__(self, other: object) -> bool:
        return super().__eq__(other) and self.score == getattr(other, "score", None)

    __hash__ = Item.__hash__

    def dict(self) -> dict:
        return {**super().dict(), "score": self.score}


class GetOp(NamedTuple):
    namespace: Tuple[str, ...]
    key: str
    refresh_ttl: bool = True


class SearchOp(NamedTuple):
    namespace_prefix: Tuple[str, ...]
    filter: Optional[Dict[str, Any]] = None
    limit: int = 10
    offset: int = 0
    query: Optional[str] = None
    refresh_ttl: bool = True


class PutOp(NamedTuple):
    """value None deletes the item."""
    namespace: Tuple[str, ...]
    key: str
    value: Optional[Dict[str, Any]]
    index: Any = None  # None: the store's fields; False: not embedded; a list of paths
    ttl: Optional[float] = None  # minutes


class MatchCondition(NamedTuple):
    match_type: str  # "prefix" or "suffix"
    path: Tuple[str, ...]  # labels, "*" matching any one


class ListNamespacesOp(NamedTuple):
    match_conditions: Optional[Tuple[MatchCondition, ...]] = None
    max_depth: Optional[int] = None
    limit: int = 100
    offset: int = 0


class InvalidNamespaceError(ValueError):
    """The namespace breaks LangGraph's rules (or Engram's length limit)."""


_NOT_PROVIDED = object()
_FIELD = "v."  # metadata of a value's top-level scalar field
_LABEL = "ns."  # metadata of a namespace label: ns.0, ns.1, ...
_INDEXED = "lg.indexed"  # False: stored without a vector (index=False)
_TTL = "lg.ttl_minutes"
_MAX_FIELD_STRING = 512  # longer strings are not copied into metadata
_PAGE = 500


def _validate_namespace(namespace: Tuple[str, ...]) -> None:
    if not namespace:
        raise InvalidNamespaceError("Namespace cannot be empty.")
    for label in namespace:
        if not isinstance(label, str):
            raise InvalidNamespaceError(
                f"Invalid namespace label {label!r} in {namespace}: labels must be strings")
        if not label:
            raise InvalidNamespaceError(f"Namespace labels cannot be empty strings: {namespace}")
        if "." in label:
            raise InvalidNamespaceError(
                f"Invalid namespace label {label!r} in {namespace}: labels cannot contain '.'")
    if namespace[0] == "langgraph":
        raise InvalidNamespaceError(f'Root label for namespace cannot be "langgraph": {namespace}')


def _path_texts(value: Any, path: str) -> List[str]:
    """The texts at a LangGraph field path: "$" (the whole value), "a.b",
    "a[0]", "a[-1]" and "a[*]" (each element)."""
    if path == "$":
        return [value if isinstance(value, str) else json.dumps(value, sort_keys=True)]
    nodes = [value]
    for part in path.split("."):
        name, _, rest = part.partition("[")
        if name:
            nodes = [node[name] for node in nodes if isinstance(node, dict) and name in node]
        while rest:
            index, _, rest = rest.partition("]")
            rest = rest[1:] if rest.startswith("[") else rest
            expanded = []
            for node in nodes:
                if not isinstance(node, list):
                    continue
                if index == "*":
                    expanded.extend(node)
                else:
                    try:
                        expanded.append(node[int(index)])
                    except (ValueError, IndexError):
                        pass
            nodes = expanded
    return [node if isinstance(node, str) else json.dumps(node, sort_keys=True)
            for node in nodes if node is not None]


def _datetime(micros: int) -> datetime:
    return datetime.fromtimestamp(micros / 1e6, tz=timezone.utc)


def _unit(vector: Sequence[float]) -> List[float]:
    norm = math.sqrt(sum(float(x) * float(x) for x in vector))
    return [float(x) / norm for x in vector] if norm > 0 else [float(x) for x in vector]


class EngramStore:
    """LangGraph's BaseStore on an engramd space.

    index: {"dims": int, "embed": <a function from a list of texts to a list
    of vectors, or an object with embed_documents and embed_query (LangChain
    Embeddings)>, "fields": [paths] (default ["$"]: the whole value)};
    without it, query searches are BM25 over the items' text.
    ttl: {"default_ttl": minutes, "refresh_on_read": bool (default True)}.
    `connection`: engram.Memory's token and TLS options. The space is
    created on first use (inner product, `dims` dimensions, or 1 without an
    index); an existing space must have the same dimension.
    """

    supports_ttl = True

    def __init__(self, address: str = "127.0.0.1:50051", space: str = "langgraph", *,
                 index: Optional[Dict[str, Any]] = None,
                 ttl: Optional[Dict[str, Any]] = None, timeout: float = 30.0, **connection):
        self._address = address
        self._connection = dict(connection, timeout=timeout)
        self._memory = Memory(address, space=space, **self._connection)
        self._async_memory = None
        self.index_config = dict(index) if index else None
        self.ttl_config = dict(ttl) if ttl else None
        self._dimension = 1
        self._embed_documents: Optional[Callable[[List[str]], List[List[float]]]] = None
        self._embed_query: Optional[Callable[[str], List[float]]] = None
        self._fields: List[str] = ["$"]
        if index:
            self._dimension = int(index["dims"])
            embed = index.get("embed")
            if hasattr(embed, "embed_documents") and hasattr(embed, "embed_query"):
                self._embed_documents = embed.embed_documents
                self._embed_query = embed.embed_query
            elif callable(embed):
                self._embed_documents = embed
                self._embed_query = lambda text: embed([text])[0]
            else:
                raise ValueError("index['embed'] must be a function from texts to vectors or "
                                 "an object with embed_documents and embed_query")
            self._fields = list(index.get("fields") or ["$"])
        self._ready = False  # the space exists with the right dimension

    @property
    def space(self) -> str:
        return self._memory.space

    def close(self) -> None:
        self._memory.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # Batches --------------------------------------------------------------

    def batch(self, ops: Iterable[Any]) -> List[Any]:
        """Runs each op in order; one result per op (Item or None for a get,
        a list of SearchItem for a search, None for a put, a list of
        namespace tuples for a list)."""
        return [self._drive(operation) for operation in self._operations(ops)]

    async def abatch(self, ops: Iterable[Any]) -> List[Any]:
        """batch() on engramd's asyncio client; the embedding function, if
        any, is called in a worker thread."""
        results = []
        for operation in self._operations(ops):
            results.append(await self._adrive(operation))
        return results

    def _operations(self, ops: Iterable[Any]):
        for op in ops:
            kind = type(op).__name__
            if kind == "GetOp":
                yield self._get(op)
            elif kind == "PutOp":
                yield self._put(op)
            elif kind == "SearchOp":
                yield self._search(op)
            elif kind == "ListNamespacesOp":
                yield self._list_namespaces(op)
            else:
                raise ValueError(f"unknown store operation {op!r}")

    # An operation is a generator that yields ("rpc", memory operation) or
    # ("embed", (function, argument)) and receives their results; the two
    # drivers run it on the blocking and on the asyncio client.

    def _drive(self, operation):
        try:
            step = next(operation)
            while True:
                kind, work = step
                try:
                    if kind == "rpc":
                        result = self._memory._run(work)
                    else:
                        function, argument = work
                        result = function(argument)
                except Exception as error:  # handed to the operation, which may expect it
                    step = operation.throw(error)
                else:
                    step = operation.send(result)
        except StopIteration as done:
            return done.value

    async def _adrive(self, operation):
        if self._async_memory is None:
            from engram.aio import Memory as AsyncMemory
            self._async_memory = AsyncMemory(self._address, space=self._memory.space,
                                             **self._connection)
        try:
            step = next(operation)
            while True:
                kind, work = step
                try:
                    if kind == "rpc":
                        result = await self._async_memory._run(work)
                    else:
                        function, argument = work
                        result = await asyncio.get_running_loop().run_in_executor(
                            None, function, argument)
                except Exception as error:
                    step = operation.throw(error)
                else:
                    step = operation.send(result)
        except StopIteration as done:
            return done.value

    def _ensure_space(self):
        if self._ready:
            return
        m = self._memory
        try:
            space = yield "rpc", m._get_space(None)
        except NotFoundError:
            try:
                space = yield "rpc", m._create_space(self._dimension, "ip", None, "", None,
                                                     None, "")
            except AlreadyExistsError:  # created meanwhile by another store
                space = yield "rpc", m._get_space(None)
        if space.dimension != self._dimension:
            raise ValueError(f"space '{space.name}' has {space.dimension} dimensions; this "
                             f"store's index needs {self._dimension}")
        self._ready = True

    # Operations -------------------------------------------------------------

    def _item(self, episode: Episode, score: Any = _NOT_PROVIDED) -> Item:
        namespace = tuple(episode.agent_id.split("."))
        value = json.loads(episode.text)
        created, updated = _datetime(episode.created_at_us), _datetime(episode.updated_at_us)
        if score is _NOT_PROVIDED:
            return Item(value=value, key=episode.key, namespace=namespace, created_at=created,
                        updated_at=updated)
        return SearchItem(namespace, episode.key, value, created, updated, score)

    def _refresh(self, episodes: List[Episode], refresh: Optional[bool]):
        """Pushes the expiry of items with a TTL forward, once half of it
        has passed (a write each)."""
        if refresh is None:
            refresh = (self.ttl_config or {}).get("refresh_on_read", True)
        if not refresh:
            return
        now_us = time.time() * 1e6
        for episode in episodes:
            minutes = episode.metadata.get(_TTL)
            if minutes and episode.expires_at_us - now_us < minutes * 30e6:
                yield "rpc", self._memory._update(episode.id, "", None, 0,
                                                  {"expires_at_us": int(now_us + minutes * 60e6)})

    def _get(self, op):
        yield from self._ensure_space()
        try:
            episode = yield "rpc", self._memory._get(0, op.key, ".".join(op.namespace))
        except NotFoundError:
            return None
        yield from self._refresh([episode], getattr(op, "refresh_ttl", None))
        return self._item(episode)

    def _put(self, op):
        _validate_namespace(tuple(op.namespace))
        yield from self._ensure_space()
        agent = ".".join(op.namespace)
        m = self._memory
        if op.value is None:
            try:
                yield "rpc", m._delete((), [op.key], agent)
            except NotFoundError:
                pass
            return None
        value = op.value
        text = json.dumps(value, sort_keys=True)
        metadata: Dict[str, Any] = {f"{_LABEL}{i}": label for i, label in enumerate(op.namespace)}
        for field, field_value in value.items():
            if is_scalar(field_value) and not (isinstance(field_value, str) and
                                                len(field_value) > _MAX_FIELD_STRING):
                metadata[_FIELD + field] = field_value
        index = getattr(op, "index", None)
        embedding = [0.0] * self._dimension
        indexed = self._embed_documents is not None and index is not False
        if indexed:
            paths = self._fields if index is None else list(index)
            texts = [t for path in paths for t in _path_texts(value, path)]
            if texts:
                vectors = yield "embed", (self._embed_documents, ["\n".join(texts)])
                embedding = _unit(vectors[0])
            else:
                indexed = False
        metadata[_INDEXED] = indexed
        ttl = getattr(op, "ttl", None)
        expires_at_us = 0
        if ttl:
            metadata[_TTL] = float(ttl)
            expires_at_us = int(time.time() * 1e6 + ttl * 60e6)
        yield "rpc", m._add_many([dict(text=text, embedding=embedding, agent=agent, key=op.key,
                                       metadata=metadata, expires_at_us=expires_at_us)])
        return None

    def _where(self, prefix: Tuple[str, ...], filter: Optional[Dict[str, Any]]):
        return [(f"{_LABEL}{i}", "==", label) for i, label in enumerate(prefix)] + \
            predicates(filter, _FIELD)

    def _search(self, op):
        yield from self._ensure_space()
        m = self._memory
        where = self._where(tuple(op.namespace_prefix), op.filter)
        wanted = op.offset + op.limit
        query = getattr(op, "query", None)
        found: List[Tuple[Episode, Optional[float]]] = []
        if query:
            if self._embed_query is not None:
                vector = yield "embed", (self._embed_query, query)
                results = yield "rpc", m._search(_unit(vector), wanted, None, "", "", None, None,
                                                 None, where + [(_INDEXED, "==", True)], False,
                                                 0, False, False, "auto", 0)
            else:
                results = yield "rpc", m._search(None, wanted, query, "", "", None, None, None,
                                                 where, False, 0, False, False, "fast", 0)
            found = [(hit.episode, hit.score) for hit in results]
        else:
            request = m._list_request("", "", None, None, None, where, min(wanted, _PAGE) or 1,
                                      False)
            while len(found) < wanted:
                episodes, token = yield "rpc", m._list_page(request)
                found.extend((episode, None) for episode in episodes)
                if not token:
                    break
                request.page_token = token
        found = found[op.offset:wanted]
        yield from self._refresh([episode for episode, _ in found],
                                 getattr(op, "refresh_ttl", None))
        return [self._item(episode, score) for episode, score in found]

    def _list_namespaces(self, op):
        yield from self._ensure_space()
        namespaces = []
        token = ""
        while True:
            agents, token = yield "rpc", self._memory._list_agents_page(1000, token)
            namespaces.extend(tuple(agent.split(".")) for agent in agents)
            if not token:
                break

        def matches(namespace, condition):
            path = tuple(condition.path)
            if len(path) > len(namespace):
                return False
            part = namespace[:len(path)] if condition.match_type == "prefix" else \
                namespace[len(namespace) - len(path):]
            return all(want == "*" or want == have for want, have in zip(path, part))

        conditions = op.match_conditions or ()
        selected = [ns for ns in namespaces if all(matches(ns, c) for c in conditions)]
        if op.max_depth is not None:
            selected = sorted({ns[:op.max_depth] for ns in selected})
        return selected[op.offset:op.offset + op.limit]

    # BaseStore's helpers ----------------------------------------------------

    def _ttl(self, ttl):
        if ttl is _NOT_PROVIDED:
            return (self.ttl_config or {}).get("default_ttl")
        return ttl

    def get(self, namespace: Tuple[str, ...], key: str, *,
            refresh_ttl: Optional[bool] = None) -> Optional[Item]:
        return self.batch([GetOp(tuple(namespace), key, refresh_ttl)])[0]

    def search(self, namespace_prefix: Tuple[str, ...], /, *, query: Optional[str] = None,
               filter: Optional[Dict[str, Any]] = None, limit: int = 10, offset: int = 0,
               refresh_ttl: Optional[bool] = None) -> List[SearchItem]:
        return self.batch([SearchOp(tuple(namespace_prefix), filter, limit, offset, query,
                                    refresh_ttl)])[0]

    def put(self, namespace: Tuple[str, ...], key: str, value: Dict[str, Any],
            index: Any = None, *, ttl: Any = _NOT_PROVIDED) -> None:
        _validate_namespace(tuple(namespace))
        self.batch([PutOp(tuple(namespace), key, value, index, self._ttl(ttl))])

    def delete(self, namespace: Tuple[str, ...], key: str) -> None:
        self.batch([PutOp(tuple(namespace), key, None)])

    def list_namespaces(self, *, prefix: Optional[Tuple[str, ...]] = None,
                        suffix: Optional[Tuple[str, ...]] = None,
                        max_depth: Optional[int] = None, limit: int = 100,
                        offset: int = 0) -> List[Tuple[str, ...]]:
        return self.batch([self._list_op(prefix, suffix, max_depth, limit, offset)])[0]

    @staticmethod
    def _list_op(prefix, suffix, max_depth, limit, offset) -> ListNamespacesOp:
        conditions = []
        if prefix:
            conditions.append(MatchCondition("prefix", tuple(prefix)))
        if suffix:
            conditions.append(MatchCondition("suffix", tuple(suffix)))
        return ListNamespacesOp(tuple(conditions), max_depth, limit, offset)

    async def aget(self, namespace: Tuple[str, ...], key: str, *,
                   refresh_ttl: Optional[bool] = None) -> Optional[Item]:
        return (await self.abatch([GetOp(tuple(namespace), key, refresh_ttl)]))[0]

    async def asearch(self, namespace_prefix: Tuple[str, ...], /, *,
                      query: Optional[str] = None, filter: Optional[Dict[str, Any]] = None,
                      limit: int = 10, offset: int = 0,
                      refresh_ttl: Optional[bool] = None) -> List[SearchItem]:
        return (await self.abatch([SearchOp(tuple(namespace_prefix), filter, limit, offset,
                                            query, refresh_ttl)]))[0]

    async def aput(self, namespace: Tuple[str, ...], key: str, value: Dict[str, Any],
                   index: Any = None, *, ttl: Any = _NOT_PROVIDED) -> None:
        _validate_namespace(tuple(namespace))
        await self.abatch([PutOp(tuple(namespace), key, value, index, self._ttl(ttl))])

    async def adelete(self, namespace: Tuple[str, ...], key: str) -> None:
        await self.abatch([PutOp(tuple(namespace), key, None)])

    async def alist_namespaces(self, *, prefix: Optional[Tuple[str, ...]] = None,
                               suffix: Optional[Tuple[str, ...]] = None,
                               max_depth: Optional[int] = None, limit: int = 100,
                               offset: int = 0) -> List[Tuple[str, ...]]:
        return (await self.abatch([self._list_op(prefix, suffix, max_depth, limit,
                                                 offset)]))[0]


try:  # LangGraph is optional: when present, EngramStore counts as one of its stores.
    from langgraph.store.base import BaseStore as _LangGraphBaseStore
except ImportError:
    _LangGraphBaseStore = None
if _LangGraphBaseStore is not None:
    _LangGraphBaseStore.register(EngramStore)
