"""One exception hierarchy for the whole engine.

Every error a user can cause or meet derives from :class:`EngineError` and carries the HTTP
status Elasticsearch uses for it (ELASTIC_REFERENCE.md §3, §6.4), so the server maps errors in one
place (``status``) and the CLI maps them to exit codes (``exit_code``).
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine raises on purpose.

    Attributes:
        status: the HTTP status code Elasticsearch answers with for this kind of error.
        error_type: the Elasticsearch ``error.type`` string used in the JSON error body.
        exit_code: the process exit code the CLI uses.
    """

    status = 500
    error_type = "status_exception"
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(EngineError):
    """Bad request content: empty text, missing mask token, bad option value (HTTP 400)."""

    status = 400
    error_type = "illegal_argument_exception"
    exit_code = 2


class InputTooLarge(InvalidInput):
    """Input over ``max_sequence_length`` with ``truncate: none`` and no span (HTTP 400)."""


class UnknownTask(InvalidInput):
    """A task name that is not one of the Elasticsearch NLP tasks (HTTP 400)."""


class ResourceNotFound(EngineError):
    """Unknown model, deployment or inference endpoint (HTTP 404)."""

    status = 404
    error_type = "resource_not_found_exception"
    exit_code = 3


class ModelError(EngineError):
    """The model cannot serve the request: wrong task for the package, output of the wrong shape,
    missing vocabulary token (HTTP 409, as Elasticsearch answers for model/config mismatches)."""

    status = 409
    error_type = "status_exception"
    exit_code = 4


class PackageError(ModelError):
    """A model package that is missing, corrupt, or whose hashes do not match its manifest."""


class NotDeployed(ModelError):
    """The model exists but has no started deployment (HTTP 409)."""


class InferenceTimeout(EngineError):
    """The request's timeout expired before its result came back (HTTP 408)."""

    status = 408
    error_type = "status_exception"
    exit_code = 5


class QueueFull(EngineError):
    """The deployment's bounded queue is full (HTTP 429)."""

    status = 429
    error_type = "es_rejected_execution_exception"
    exit_code = 6


class InferenceFailed(EngineError):
    """The ONNX Runtime session raised while running a batch (HTTP 500)."""

    status = 500
    error_type = "status_exception"
    exit_code = 7


class DeploymentStopped(EngineError):
    """The deployment was stopped while the request was pending (HTTP 409)."""

    status = 409
    error_type = "status_exception"
    exit_code = 8


class ExportError(EngineError):
    """An export that cannot be done: unsupported architecture, missing tokenizer, offline hub id,
    non-empty output directory, remote code without ``--trust-remote-code``."""

    status = 400
    error_type = "illegal_argument_exception"
    exit_code = 9


# HTTP-only errors: raised by ``engine serve`` about the request itself, never by the engine.
class Unauthorized(EngineError):
    """Missing or wrong API key (HTTP 401)."""

    status = 401
    error_type = "security_exception"


class PayloadTooLarge(EngineError):
    """Request body over ``max_body_bytes`` (HTTP 413)."""

    status = 413
    error_type = "content_too_long_exception"


class MalformedBody(InvalidInput):
    """A body that is not JSON, or JSON of the wrong shape (HTTP 400)."""

    error_type = "x_content_parse_exception"


class NoHandler(InvalidInput):
    """An unknown path; Elasticsearch answers 400 "no handler found"."""


class MethodNotAllowed(EngineError):
    """A known path with a method it does not serve (HTTP 405, as Elasticsearch answers)."""

    status = 405
    error_type = "method_not_allowed"
