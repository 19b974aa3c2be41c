"""What every Engram client class shares: one gRPC channel and its lifetime."""

import grpc

from engram.errors import EngramError


class GrpcClient:
    """Owns a channel to engramd; usable as a context manager."""

    def __init__(self, address: str, timeout: float, options=None):
        self.timeout = timeout
        self._channel = grpc.insecure_channel(address, options=options or [])

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def wait_ready(self, timeout: float = 10.0):
        """Blocks until the channel connects; UnavailableError after `timeout`."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise EngramError(grpc.StatusCode.UNAVAILABLE, "engramd not reachable") from None
