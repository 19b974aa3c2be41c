"""What every Engram client class shares: one gRPC channel, its credentials
and its lifetime."""

import collections
import os
from typing import Any, List, Optional, Tuple

import grpc

from engram.errors import EngramError


class _CallDetails(collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready",
                         "compression")), grpc.ClientCallDetails):
    pass


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                   grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call. (gRPC's
    access_token_call_credentials would need TLS; engramd also accepts
    tokens over loopback plaintext.)"""

    def __init__(self, token: str):
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details):
        metadata = list(details.metadata or []) + [self._header]
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


def _read(path: Optional[str]) -> Optional[bytes]:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


def channel_settings(options=None, *, token: Optional[str] = None, tls: bool = False,
                     tls_ca_file: Optional[str] = None, tls_cert_file: Optional[str] = None,
                     tls_key_file: Optional[str] = None, tls_server_name: Optional[str] = None
                     ) -> Tuple[Optional[grpc.ChannelCredentials], List[Tuple[str, Any]], str]:
    """(TLS credentials or None for plaintext, channel options, bearer token
    or "") from a client's connection arguments; shared by the blocking and
    the asyncio clients."""
    options = list(options or [])
    credentials = None
    if tls or tls_ca_file or tls_cert_file:
        if bool(tls_cert_file) != bool(tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file go together")
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(tls_ca_file), private_key=_read(tls_key_file),
            certificate_chain=_read(tls_cert_file))
        if tls_server_name:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
    if token is None:
        token = os.environ.get("ENGRAM_TOKEN", "")
    return credentials, options, token


class GrpcClient:
    """Owns a channel to engramd; usable as a context manager.

    Credentials, all optional: `token` (default: the ENGRAM_TOKEN environment
    variable; "" sends none); TLS with `tls=True` or any of `tls_ca_file` (the
    CA to verify engramd with; default: the system's roots), `tls_cert_file`
    and `tls_key_file` (a client certificate, for mTLS), and
    `tls_server_name` (the name engramd's certificate carries, when it is not
    the address's host)."""

    def __init__(self, address: str, timeout: float, options=None, **connection):
        self.timeout = timeout
        credentials, options, token = channel_settings(options, **connection)
        if credentials is not None:
            channel = grpc.secure_channel(address, credentials, options=options)
        else:
            channel = grpc.insecure_channel(address, options=options)
        self._raw_channel = channel
        if token:
            channel = grpc.intercept_channel(channel, _BearerToken(token))
        self._channel = channel

    def close(self):
        self._raw_channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def wait_ready(self, timeout: float = 10.0):
        """Blocks until the channel connects; UnavailableError after `timeout`."""
        try:
            grpc.channel_ready_future(self._raw_channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise EngramError(grpc.StatusCode.UNAVAILABLE, "engramd not reachable") from None
