"""Engram's asyncio client, on grpc.aio.

    from engram.aio import Memory
    async with Memory("127.0.0.1:50051", space="notes", agent="alice") as memory:
        await memory.add("likes tea", embedding)
        hits = await memory.search(query, k=5)
        async for episode in memory.list():
            ...

The same methods, arguments, results and errors as engram.Memory (they run
the same operations); every method is a coroutine, and list() is an async
iterator. Create it inside the event loop that uses it.
"""

import asyncio
from typing import Any, AsyncIterator, Generator, List, Optional, Sequence, Union

import grpc
import grpc.aio

from engram._client import channel_settings
from engram.errors import UnavailableError, from_rpc_error
from engram.memory import (Episode, EpisodeId, SearchResults, Space, _MemoryOperations,
                           agent_metadata)
from engram.v1 import memory_pb2_grpc

__all__ = ["Memory"]


class Memory(_MemoryOperations):
    """engram.Memory for asyncio: one space (and by default one agent) over a
    grpc.aio channel. `connection`: token and TLS options, as engram.Memory
    takes them."""

    def __init__(self, address: str = "127.0.0.1:50051", space: Optional[str] = None,
                 agent: Optional[str] = None, session: str = "", timeout: float = 30.0,
                 write_attempts: int = 3, options=None, **connection):
        self.timeout = timeout
        self._init_scope(space, agent, session, write_attempts)
        credentials, options, token = channel_settings(options, **connection)
        if credentials is not None:
            self._channel = grpc.aio.secure_channel(address, credentials, options=options)
        else:
            self._channel = grpc.aio.insecure_channel(address, options=options)
        # Sent with every call (engramd accepts tokens over loopback plaintext).
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._stub = memory_pb2_grpc.MemoryServiceStub(self._channel)

    async def close(self):
        await self._channel.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def wait_ready(self, timeout: float = 10.0):
        """Waits until the channel connects; UnavailableError after `timeout`."""
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout)
        except asyncio.TimeoutError:
            raise UnavailableError(grpc.StatusCode.UNAVAILABLE, "engramd not reachable") from None

    async def _run(self, operation: Generator) -> Any:
        """Runs an operation (see engram.memory._MemoryOperations) on this channel."""
        try:
            step = next(operation)
            while True:
                name, argument = step
                if name == "sleep":
                    await asyncio.sleep(argument)
                    step = operation.send(None)
                    continue
                try:
                    response = await getattr(self._stub, name)(
                        argument, timeout=self.timeout,
                        metadata=self._metadata + agent_metadata(argument))
                except grpc.RpcError as error:
                    step = operation.throw(error)
                else:
                    step = operation.send(response)
        except StopIteration as done:
            return done.value
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    async def create_space(self, dimension: int = 0, metric: str = "cosine",
                           name: Optional[str] = None, *, stem_language: str = "",
                           bm25_k1: Optional[float] = None, bm25_b: Optional[float] = None,
                           embedder: str = "") -> Space:
        return await self._run(self._create_space(dimension, metric, name, stem_language,
                                                  bm25_k1, bm25_b, embedder))

    async def get_space(self, name: Optional[str] = None) -> Space:
        return await self._run(self._get_space(name))

    async def list_spaces(self) -> List[Space]:
        return await self._run(self._list_spaces())

    async def delete_space(self, name: Optional[str] = None) -> int:
        return await self._run(self._delete_space(name))

    async def add(self, text: str, embedding: Optional[Sequence[float]] = None, *,
                  request_id: str = "", **fields) -> EpisodeId:
        return (await self.add_many([dict(text=text, embedding=embedding,
                                          request_id=request_id, **fields)]))[0]

    async def add_many(self, episodes: Sequence[dict]) -> List[EpisodeId]:
        return await self._run(self._add_many(episodes))

    async def get(self, episode_id: int = 0, *, key: str = "",
                  agent: Optional[str] = None) -> Episode:
        return await self._run(self._get(episode_id, key, agent))

    async def update(self, episode_id: int = 0, *, key: str = "", agent: Optional[str] = None,
                     expected_version: int = 0, **fields) -> Episode:
        return await self._run(self._update(episode_id, key, agent, expected_version, fields))

    async def history(self, episode_id: int = 0, page_size: int = 100, *, key: str = "",
                      agent: Optional[str] = None) -> List[Episode]:
        return await self._run(self._history(episode_id, page_size, key, agent))

    async def delete(self, episode_ids: Union[int, Sequence[int]] = (), *,
                     keys: Union[str, Sequence[str]] = (), agent: Optional[str] = None) -> int:
        return await self._run(self._delete(episode_ids, keys, agent))

    async def forget_agent(self, agent: Optional[str] = None, session: str = "") -> int:
        return await self._run(self._forget_agent(agent, session))

    async def search(self, embedding: Optional[Sequence[float]] = None, k: int = 10, *,
                     text: Optional[str] = None, agent: Optional[str] = None,
                     session: str = "", kinds=None, since_us=None, until_us=None, where=None,
                     include_embedding: bool = False, beam_width: int = 0,
                     exact: bool = False, scan: bool = False, route: str = "auto",
                     reference_time_us: int = 0) -> SearchResults:
        return await self._run(self._search(embedding, k, text, agent, session, kinds, since_us,
                                            until_us, where, include_embedding, beam_width,
                                            exact, scan, route, reference_time_us))

    async def analyze(self, text: str) -> List[str]:
        return await self._run(self._analyze(text, False))

    async def embed(self, text: str) -> List[float]:
        return await self._run(self._analyze(text, True))

    def list(self, *, agent: Optional[str] = None, session: str = "", kinds=None,
             since_us=None, until_us=None, where=None, page_size: int = 100,
             include_embedding: bool = False) -> AsyncIterator[Episode]:
        """Every matching episode, a page fetched at a time: `async for`."""
        request = self._list_request(agent, session, kinds, since_us, until_us, where,
                                     page_size, include_embedding)
        return self._pages(request)

    async def list_agents(self, page_size: int = 100) -> AsyncIterator[str]:
        """The agents holding episodes in this space: `async for`."""
        token = ""
        while True:
            agents, token = await self._run(self._list_agents_page(page_size, token))
            for agent in agents:
                yield agent
            if not token:
                return

    async def _pages(self, request) -> AsyncIterator[Episode]:
        while True:
            episodes, token = await self._run(self._list_page(request))
            for episode in episodes:
                yield episode
            if not token:
                return
            request.page_token = token

