"""Mem0-shaped adapters on Engram (Mem0 is not imported):

- EngramVectorStore: Mem0's vector-store plug-in interface (VectorStoreBase:
  create_col, insert, search, keyword_search, delete, update, get,
  list_cols, delete_col, col_info, list, reset), with Mem0's string ids as
  episode keys, so Mem0 can keep its memories in engramd;
- Memory: Mem0's Memory facade (add, search, get_all, get, update, delete,
  delete_all, history, reset) straight on engramd, scoped by user_id,
  agent_id and run_id, results as {"results": [...]} with Mem0's fields.
  It stores messages as they are: Mem0's fact extraction needs an LLM
  (infer=True), which is Mem0's part, not a database's.

Payloads and metadata: scalar values (strings, numbers, booleans) are
episode metadata, so filters on them run inside engramd; other values are
kept as JSON and returned as they were, but cannot be filtered on.
"""

import hashlib
import itertools
import json
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple
import uuid

from engram.errors import AlreadyExistsError, NotFoundError
from engram.integrations._filters import is_scalar, predicates
from engram.memory import Episode, Memory as _EngramMemory

__all__ = ["EngramVectorStore", "Memory", "OutputData"]

_SCALAR = "p."  # metadata of a scalar payload value
_JSON = "j."  # metadata of any other payload value, as JSON
_STORE_AGENT = "mem0"  # the one agent a vector store's entries live under
_METRICS = {"cosine": "cosine", "euclid": "l2", "euclidean": "l2", "l2": "l2", "dot": "ip",
            "ip": "ip", "inner_product": "ip"}
_PAGE = 500


class OutputData:
    """What Mem0's vector stores return: id, score (None outside a search)
    and payload."""

    __slots__ = ("id", "score", "payload")

    def __init__(self, id: str, score: Optional[float], payload: Dict[str, Any]):
        self.id = id
        self.score = score
        self.payload = payload

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OutputData) and \
            (self.id, self.score, self.payload) == (other.id, other.score, other.payload)

    def __repr__(self) -> str:
        return f"OutputData(id={self.id!r}, score={self.score!r}, payload={self.payload!r})"


def _payload_metadata(payload: Dict[str, Any]) -> Dict[str, Any]:
    metadata = {}
    for name, value in payload.items():
        if value is None:
            continue
        if is_scalar(value):
            metadata[_SCALAR + name] = value
        else:
            metadata[_JSON + name] = json.dumps(value, sort_keys=True)
    return metadata


def _payload(episode: Episode) -> Dict[str, Any]:
    payload = {}
    for name, value in episode.metadata.items():
        if name.startswith(_SCALAR):
            payload[name[len(_SCALAR):]] = value
        elif name.startswith(_JSON):
            payload[name[len(_JSON):]] = json.loads(value)
    return payload


def _where(filters: Optional[Dict[str, Any]]) -> List[Tuple[str, str, Any]]:
    """Mem0 filters: {"field": value} or {"field": {"gte": 1, ...}}, ANDed."""
    return predicates(filters, _SCALAR)


def _iso(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1e6, tz=timezone.utc).isoformat()


class EngramVectorStore:
    """Mem0's vector store on an engramd space (the collection).

    Every entry is an episode of the agent "mem0" whose key is Mem0's id;
    the payload's "data" (the memory's text) is the episode text, so
    keyword_search is BM25 over it. `connection`: engram.Memory's token and
    TLS options."""

    def __init__(self, address: str = "127.0.0.1:50051", collection_name: str = "mem0",
                 embedding_model_dims: int = 1536, distance: str = "cosine", **connection):
        self._memory = _EngramMemory(address, space=collection_name, agent=_STORE_AGENT,
                                     **connection)
        self.collection_name = collection_name
        self.embedding_model_dims = embedding_model_dims
        self.distance = distance
        self.create_col(collection_name, embedding_model_dims, distance)

    def close(self) -> None:
        self._memory.close()

    def _output(self, episode: Episode, score: Optional[float] = None) -> OutputData:
        return OutputData(episode.key, score, _payload(episode))

    def create_col(self, name: str, vector_size: int, distance: str = "cosine") -> None:
        """Creates the space if it does not exist; an existing one must have
        `vector_size` dimensions."""
        if distance not in _METRICS:
            raise ValueError(f"distance {distance!r} is not one of {sorted(_METRICS)}")
        try:
            self._memory.create_space(dimension=vector_size, metric=_METRICS[distance], name=name)
        except AlreadyExistsError:
            existing = self._memory.get_space(name)
            if existing.dimension != vector_size:
                raise ValueError(f"collection {name!r} has {existing.dimension} dimensions, "
                                 f"not {vector_size}") from None
        self._memory.space = name
        self.collection_name = name

    def insert(self, vectors: Sequence[Sequence[float]],
               payloads: Optional[Sequence[Dict[str, Any]]] = None,
               ids: Optional[Sequence[str]] = None) -> None:
        """Stores entries all or nothing; an id that exists is replaced."""
        payloads = list(payloads or [{} for _ in vectors])
        ids = [str(i) for i in ids] if ids else [str(uuid.uuid4()) for _ in vectors]
        if not len(vectors) == len(payloads) == len(ids):
            raise ValueError("vectors, payloads and ids differ in length")
        self._memory.add_many([
            dict(text=str(payload.get("data", "")), embedding=vector, key=entry_id,
                 metadata=_payload_metadata(payload))
            for vector, payload, entry_id in zip(vectors, payloads, ids)])

    def search(self, query: Optional[str], vectors: Sequence[float], top_k: int = 5,
               filters: Optional[Dict[str, Any]] = None, limit: Optional[int] = None
               ) -> List[OutputData]:
        """The entries nearest `vectors`, best first (score: the space's
        similarity, higher is closer). `limit` is older Mem0's name for top_k."""
        k = limit if limit is not None else top_k
        hits = self._memory.search(vectors, k=k, where=_where(filters))
        return [self._output(hit.episode, hit.score) for hit in hits]

    def keyword_search(self, query: str, top_k: int = 5,
                       filters: Optional[Dict[str, Any]] = None) -> List[OutputData]:
        """BM25 over the entries' text (payload "data"), best first."""
        hits = self._memory.search(text=query, k=top_k, where=_where(filters), route="fast")
        return [self._output(hit.episode, hit.score) for hit in hits]

    def delete(self, vector_id: str) -> None:
        try:
            self._memory.delete(keys=[str(vector_id)])
        except NotFoundError:
            pass

    def update(self, vector_id: str, vector: Optional[Sequence[float]] = None,
               payload: Optional[Dict[str, Any]] = None) -> None:
        """Replaces the vector and/or the payload (a new version of the
        episode; engramd keeps the old one in its history)."""
        current = self._memory.get(key=str(vector_id))
        payload = payload if payload is not None else _payload(current)
        self._memory.add(str(payload.get("data", "")),
                         vector if vector is not None else current.embedding,
                         key=str(vector_id), metadata=_payload_metadata(payload))

    def get(self, vector_id: str) -> Optional[OutputData]:
        try:
            return self._output(self._memory.get(key=str(vector_id)))
        except NotFoundError:
            return None

    def list_cols(self) -> List[str]:
        return [space.name for space in self._memory.list_spaces()]

    def delete_col(self) -> None:
        try:
            self._memory.delete_space(self.collection_name)
        except NotFoundError:
            pass

    def col_info(self) -> Dict[str, Any]:
        space = self._memory.get_space(self.collection_name)
        return {"name": space.name, "dimension": space.dimension, "metric": space.metric,
                "count": space.episode_count}

    def list(self, filters: Optional[Dict[str, Any]] = None, top_k: Optional[int] = None,
             limit: Optional[int] = None) -> List[List[OutputData]]:
        """[entries]: Mem0 reads the first element (as Qdrant's scroll returns)."""
        wanted = limit if limit is not None else top_k
        entries = []
        for episode in self._memory.list(where=_where(filters), page_size=_PAGE):
            if wanted is not None and len(entries) >= wanted:
                break
            entries.append(self._output(episode))
        return [entries]

    def reset(self) -> None:
        self.delete_col()
        self.create_col(self.collection_name, self.embedding_model_dims, self.distance)


_SCOPES = ("user_id", "agent_id", "run_id")
_PROMOTED = ("user_id", "agent_id", "run_id", "actor_id", "role")


class Memory:
    """Mem0's Memory facade on engramd, without an LLM.

    embed: a function from a list of texts to a list of vectors; or None
    with a space whose engramd embedder turns text into vectors (created
    here with embedder=`server_embedder`, "static" by default). Memories of
    a user live under the Engram agent "user:<id>" (else "agent:<id>", else
    "run:<id>"); every scope id is also metadata, so any combination filters.
    Ids are Engram's episode ids, as strings."""

    def __init__(self, address: str = "127.0.0.1:50051", space: str = "mem0", *,
                 embed: Optional[Callable[[List[str]], List[List[float]]]] = None,
                 dims: int = 0, server_embedder: str = "static", **connection):
        self._memory = _EngramMemory(address, space=space, **connection)
        self._embed = embed
        if embed is not None and dims <= 0:
            raise ValueError("give dims, the length of embed's vectors")
        try:
            if embed is not None:
                self._memory.create_space(dimension=dims, metric="cosine")
            else:
                self._memory.create_space(embedder=server_embedder)
        except AlreadyExistsError:
            pass

    def close(self) -> None:
        self._memory.close()

    # Scopes -----------------------------------------------------------------

    @staticmethod
    def _scopes(filters: Optional[Dict[str, Any]], ids: Dict[str, Optional[str]],
                require: bool = True) -> Tuple[Dict[str, str], Dict[str, Any]]:
        """(scope ids, other filters) from Mem0's filters dict and the older
        keyword arguments."""
        other = dict(filters or {})
        scopes = {name: other.pop(name) for name in _SCOPES if name in other}
        scopes.update({name: value for name, value in ids.items() if value})
        scopes = {name: str(value).strip() for name, value in scopes.items()}
        if require and not any(scopes.values()):
            raise ValueError("filters must contain at least one of: user_id, agent_id, run_id")
        return scopes, other

    @staticmethod
    def _agent(scopes: Dict[str, str]) -> str:
        for name, prefix in (("user_id", "user"), ("agent_id", "agent"), ("run_id", "run")):
            if scopes.get(name):
                return f"{prefix}:{scopes[name]}"
        return ""

    def _query(self, scopes, other):
        """(engram agent filter, where) for a scoped read."""
        where = _where(other) + [(_SCALAR + name, "==", value) for name, value in scopes.items()]
        agent = self._agent(scopes) if scopes.get("user_id") else ""
        return agent, where

    def _item(self, episode: Episode, score: Optional[float] = None) -> Dict[str, Any]:
        payload = _payload(episode)
        item = {"id": str(episode.id), "memory": episode.text, "hash": payload.pop("hash", None),
                "created_at": _iso(episode.created_at_us),
                "updated_at": _iso(episode.updated_at_us) if episode.version > 1 else None}
        for name in _PROMOTED:
            if name in payload:
                item[name] = payload.pop(name)
        if payload:
            item["metadata"] = payload
        if score is not None:
            item["score"] = score
        return item

    def _vectors(self, texts: List[str]) -> List[Optional[List[float]]]:
        if self._embed is None:
            return [None] * len(texts)  # engramd's embedder
        return list(self._embed(texts))

    # Mem0's methods ---------------------------------------------------------

    def add(self, messages, *, user_id: Optional[str] = None, agent_id: Optional[str] = None,
            run_id: Optional[str] = None, metadata: Optional[Dict[str, Any]] = None,
            infer: bool = False, **unsupported) -> Dict[str, Any]:
        """Stores each message (a string, or {"role", "content"} dicts;
        system messages are skipped) as one memory; {"results": [{"id",
        "memory", "event": "ADD"}]}."""
        if infer:
            raise ValueError("infer=True asks an LLM to extract facts, which this adapter "
                             "does not run; pass infer=False to store the messages as they are")
        if unsupported:
            raise TypeError(f"unsupported arguments: {sorted(unsupported)}")
        scopes, _ = self._scopes(None, {"user_id": user_id, "agent_id": agent_id,
                                        "run_id": run_id})
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        elif isinstance(messages, dict):
            messages = [messages]
        kept = [m for m in messages if m.get("role") != "system" and m.get("content")]
        texts = [str(m["content"]) for m in kept]
        vectors = self._vectors(texts)
        writes = []
        for message, text, vector in zip(kept, texts, vectors):
            payload = {**(metadata or {}), **scopes, "role": message.get("role", "user"),
                       "hash": hashlib.md5(text.encode()).hexdigest()}
            writes.append(dict(text=text, embedding=vector, agent=self._agent(scopes),
                               session=scopes.get("run_id", ""), kind="memory",
                               metadata=_payload_metadata(payload)))
        ids = self._memory.add_many(writes) if writes else []
        return {"results": [{"id": str(i), "memory": text, "event": "ADD"}
                            for i, text in zip(ids, texts)]}

    def search(self, query: str, *, top_k: int = 20, filters: Optional[Dict[str, Any]] = None,
               threshold: Optional[float] = None, limit: Optional[int] = None,
               user_id: Optional[str] = None, agent_id: Optional[str] = None,
               run_id: Optional[str] = None) -> Dict[str, Any]:
        """The memories nearest `query` in the scope, best first, each with
        its score (cosine similarity with `embed`; otherwise the fused score
        of engramd's hybrid vector and BM25 search); below `threshold` left out."""
        scopes, other = self._scopes(filters, {"user_id": user_id, "agent_id": agent_id,
                                               "run_id": run_id})
        agent, where = self._query(scopes, other)
        k = limit if limit is not None else top_k
        vector = self._vectors([query])[0]
        hits = self._memory.search(vector, k=k, text=None if vector is not None else query,
                                   agent=agent, where=where)
        return {"results": [self._item(hit.episode, hit.score) for hit in hits
                            if threshold is None or hit.score >= threshold]}

    def get_all(self, *, filters: Optional[Dict[str, Any]] = None, top_k: int = 100,
                limit: Optional[int] = None, user_id: Optional[str] = None,
                agent_id: Optional[str] = None, run_id: Optional[str] = None) -> Dict[str, Any]:
        scopes, other = self._scopes(filters, {"user_id": user_id, "agent_id": agent_id,
                                               "run_id": run_id})
        agent, where = self._query(scopes, other)
        wanted = limit if limit is not None else top_k
        results = []
        for episode in self._memory.list(agent=agent, where=where, page_size=_PAGE):
            if len(results) >= wanted:
                break
            results.append(self._item(episode))
        return {"results": results}

    def _episode(self, memory_id) -> Optional[Episode]:
        try:
            return self._memory.get(int(memory_id))
        except (NotFoundError, ValueError):
            return None

    def get(self, memory_id) -> Optional[Dict[str, Any]]:
        episode = self._episode(memory_id)
        return self._item(episode) if episode is not None else None

    def update(self, memory_id, text: Optional[str] = None,
               metadata: Optional[Dict[str, Any]] = None,
               data: Optional[str] = None) -> Dict[str, Any]:
        """New text (re-embedded) and/or metadata merged in; scope ids stay."""
        text = text if text is not None else data
        if text is None and metadata is None:
            raise ValueError("At least one of text or metadata must be provided.")
        current = self._episode(memory_id)
        if current is None:
            raise ValueError(f"Memory with id {memory_id} not found")
        fields: Dict[str, Any] = {}
        payload = _payload(current)
        if text is not None:
            fields["text"] = text
            vector = self._vectors([text])[0]
            if vector is not None:
                fields["embedding"] = vector
            payload["hash"] = hashlib.md5(text.encode()).hexdigest()
        for name, value in (metadata or {}).items():
            if name not in _SCOPES and name != "actor_id":  # fixed at creation, as in Mem0
                payload[name] = value
        fields["metadata"] = _payload_metadata(payload)
        self._memory.update(current.id, **fields)
        return {"message": "Memory updated successfully!"}

    def delete(self, memory_id) -> Dict[str, Any]:
        episode = self._episode(memory_id)
        if episode is None:
            raise ValueError(f"Memory with id {memory_id} not found")
        self._memory.delete(episode.id)
        return {"message": "Memory deleted successfully!"}

    def delete_all(self, user_id: Optional[str] = None, agent_id: Optional[str] = None,
                   run_id: Optional[str] = None) -> Dict[str, Any]:
        scopes, _ = self._scopes(None, {"user_id": user_id, "agent_id": agent_id,
                                        "run_id": run_id})
        agent, where = self._query(scopes, {})
        while True:  # a page at a time: list() fetches lazily
            ids = [episode.id for episode in itertools.islice(
                self._memory.list(agent=agent, where=where, page_size=_PAGE), _PAGE)]
            if not ids:
                break
            self._memory.delete(ids)
        return {"message": "Memories deleted successfully!"}

    def history(self, memory_id) -> List[Dict[str, Any]]:
        """The memory's changes, oldest first: an ADD, then an UPDATE per
        new version (engramd's versions). A deleted memory has none."""
        episode = self._episode(memory_id)
        if episode is None:
            return []
        versions = self._memory.history(episode.id)
        changes = []
        for previous, version in zip([None] + versions[:-1], versions):
            changes.append({
                "id": f"{episode.id}.{version.version}", "memory_id": str(episode.id),
                "old_memory": previous.text if previous else None, "new_memory": version.text,
                "event": "ADD" if previous is None else "UPDATE",
                "created_at": _iso(version.created_at_us),
                "updated_at": _iso(version.updated_at_us) if previous else None,
                "is_deleted": False})
        return changes

    def reset(self) -> None:
        """Deletes every memory of the space (and the space, recreated)."""
        space = self._memory.get_space()
        self._memory.delete_space()
        self._memory.create_space(dimension=space.dimension, metric=space.metric,
                                  embedder=space.embedder)
