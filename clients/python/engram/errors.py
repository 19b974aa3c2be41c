"""Typed errors of the Engram Python client, one per gRPC status code."""

import functools

import grpc


class EngramError(Exception):
    """An RPC failed. `code` is the grpc.StatusCode, `message` the server's words.

    `retry_after` is the delay in seconds the server asked for before a retry
    (its `grpc-retry-pushback-ms` trailer) when it refused the call for
    overload and applied nothing, else None: a full disk or a tenant limit is
    RESOURCE_EXHAUSTED too, and retrying soon will not cure it.
    """

    def __init__(self, code, message, retry_after=None):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after


class InvalidArgumentError(EngramError):
    """The request was malformed; nothing was written."""


class NotFoundError(EngramError):
    """The space or episode does not exist."""


class AlreadyExistsError(EngramError):
    """A space with that name exists."""


class FailedPreconditionError(EngramError):
    """E.g. an update's expected_version did not match."""


class ResourceExhaustedError(EngramError):
    """Overloaded (`retry_after` set), or out of room: a full disk, a tenant
    limit, a message too large."""


class DeadlineExceededError(EngramError):
    """The call's timeout passed."""


class UnavailableError(EngramError):
    """The server could not be reached."""


class PermissionDeniedError(EngramError):
    """The token's role or scope does not allow this call."""


class UnauthenticatedError(EngramError):
    """No token, or one engramd does not know (malformed, unknown or revoked)."""


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
}


_RETRY_PUSHBACK_TRAILER = "grpc-retry-pushback-ms"


def _retry_after(error):
    """The server's retry delay in seconds, or None."""
    trailers = getattr(error, "trailing_metadata", None)
    for key, value in (trailers() if callable(trailers) else None) or ():
        if key == _RETRY_PUSHBACK_TRAILER:
            try:
                ms = int(value)
            except (TypeError, ValueError):
                return None
            return ms / 1000.0 if ms >= 0 else None
    return None


def from_rpc_error(error):
    """Turns a grpc.RpcError into the matching EngramError subclass."""
    code = error.code()
    return _BY_CODE.get(code, EngramError)(code, error.details() or "", _retry_after(error))


def translate_errors(method):
    """Decorator: a grpc.RpcError raised by `method` becomes its EngramError."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
    return wrapper
