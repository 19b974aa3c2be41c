"""Engram's Python client.

    from engram import Memory
    memory = Memory("127.0.0.1:50051", space="notes", agent="alice")
    memory.add("likes tea", embedding)
    memory.search(query_embedding, k=5)

The gRPC stubs (engram.v1) are generated at build time into build/python,
next to a copy of this package; put build/python on sys.path.
"""

from engram.errors import (AlreadyExistsError, DeadlineExceededError, EngramError,
                           FailedPreconditionError, InvalidArgumentError, NotFoundError,
                           PermissionDeniedError, ResourceExhaustedError, UnauthenticatedError,
                           UnavailableError)
from engram.admin import Admin, BackupInfo
from engram.kvcache import CacheInfo, KVCache, KVModel
from engram.memory import (Episode, EpisodeId, GateDecision, GateSignal, Hit, Memory,
                           SearchResults, SourceRank, Space, Stage)

__all__ = [
    "Admin", "AlreadyExistsError", "BackupInfo", "CacheInfo", "DeadlineExceededError",
    "EngramError", "Episode", "EpisodeId", "FailedPreconditionError", "GateDecision",
    "GateSignal", "Hit", "InvalidArgumentError", "KVCache", "KVModel", "Memory", "NotFoundError",
    "PermissionDeniedError", "ResourceExhaustedError", "SearchResults", "SourceRank", "Space",
    "Stage", "UnauthenticatedError", "UnavailableError",
]
