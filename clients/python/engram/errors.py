"""Typed errors of the Engram Python client, one per gRPC status code."""

import functools

import grpc


class EngramError(Exception):
    """An RPC failed. `code` is the grpc.StatusCode, `message` the server's words."""

    def __init__(self, code, message):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class InvalidArgumentError(EngramError):
    """The request was malformed; nothing was written."""


class NotFoundError(EngramError):
    """The space or episode does not exist."""


class AlreadyExistsError(EngramError):
    """A space with that name exists."""


class FailedPreconditionError(EngramError):
    """E.g. an update's expected_version did not match."""


class ResourceExhaustedError(EngramError):
    """The server is overloaded or a message was too large; retry later."""


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


def from_rpc_error(error):
    """Turns a grpc.RpcError into the matching EngramError subclass."""
    code = error.code()
    return _BY_CODE.get(code, EngramError)(code, error.details() or "")


def translate_errors(method):
    """Decorator: a grpc.RpcError raised by `method` becomes its EngramError."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
    return wrapper
