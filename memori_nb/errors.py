"""Exceptions raised by memori_nb.

Every error derives from :class:`MemoriNbError`, so ``except MemoriNbError`` catches them
all; :class:`RunInterrupted` (a stop the person asked for) is a KeyboardInterrupt instead. Third-party errors (httpx, duckdb, json) are wrapped once, at the edge, with ``from exc``.

::

    MemoriNbError
    ├── ConfigurationError          bad arguments or settings
    │   └── MissingApiKeyError      the memori backend has no MEMORI_API_KEY
    ├── InvalidInputError           input whose shape is unusable as a whole (file, frame, SeedData)
    ├── StoreError                  the store (DuckDB, SQLite, PostgreSQL) could not be opened or written
    └── AugmentationError           one augmentation request failed (carries conversation id, status)
        ├── TransientError          5xx, timeout, dropped connection, malformed 200: retried
        ├── RateLimitedError        429 "slow down", optionally with Retry-After: waited, retried
        ├── QuotaExceededError      429 "quota exhausted": the run stops, the rest is skipped
        ├── ServiceUnreachableError refused, DNS, TLS, connect timeout: the run stops soon
        ├── EndpointError           404, 405 or a redirect (wrong base URL): the run stops at once
        ├── PayloadRejectedError    422: the server refused this payload; never retried
        └── RequestFailedError      any other 4xx (401, 403 ...), an answer over the size cap:
                                    never retried (401/403 stop the run)

    KeyboardInterrupt
    └── RunInterrupted              Jupyter's Interrupt stopped a run; what finished is saved
"""

from __future__ import annotations


class MemoriNbError(Exception):
    """Root of every error memori_nb raises."""


class ConfigurationError(MemoriNbError, ValueError):
    """An argument or setting is not usable."""


class MissingApiKeyError(ConfigurationError):
    """The ``memori`` backend needs ``MEMORI_API_KEY`` and none was given."""


class InvalidInputError(MemoriNbError, ValueError):
    """Input whose shape makes it unusable as a whole (not one bad conversation)."""


class StoreError(MemoriNbError):
    """The store (DuckDB, SQLite, PostgreSQL) could not be opened, built or written."""


class AugmentationError(MemoriNbError):
    """An augmentation request failed.

    Attributes:
        conversation_id: the conversation the request belonged to, when known.
        status_code: the HTTP status, when there was a response.
        usage: the tokens a backend that bills by token was billed for this failed attempt
            (an answer that came back malformed), a ``memori_nb.models.Usage``; else None.
    """

    def __init__(self, message: str, *, conversation_id: str | None = None,
                 status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.conversation_id = conversation_id
        self.status_code = status_code
        self.usage = None

    def __str__(self) -> str:
        status = f"HTTP {self.status_code}: " if self.status_code is not None else ""
        return f"{status}{self.message}"


class TransientError(AugmentationError):
    """A failure worth retrying: 5xx, timeout, dropped connection, malformed response."""


class RateLimitedError(AugmentationError):
    """The server asked us to slow down (429); ``retry_after`` is in seconds, if it said."""

    def __init__(self, message: str, *, retry_after: float | None = None, **context) -> None:
        super().__init__(message, **context)
        self.retry_after = retry_after


class QuotaExceededError(AugmentationError):
    """The account's quota is exhausted (429): nothing more can be sent in this run."""


class ServiceUnreachableError(AugmentationError):
    """The service could not be reached at all (refused, DNS, TLS, proxy, connect timeout).

    Every other request would fail the same way, so the run stops after a quick retry or two.
    """


class EndpointError(AugmentationError):
    """The base URL answers, but not as the augmentation endpoint (404, 405 or a redirect).

    The message names the URL and the setting to check; the run stops at once.
    """


class PayloadRejectedError(AugmentationError):
    """The server rejected the payload (422). Retrying the same payload cannot help."""


class RequestFailedError(AugmentationError):
    """Any other client error (401, 403 ...), or an answer over the size cap. Not retried."""


class RunInterrupted(KeyboardInterrupt):
    """Jupyter's Interrupt stopped a seeding run: what finished is saved, and running again
    continues. A KeyboardInterrupt, so the rest of the cell stops too; in Jupyter it shows
    as its one line, without a traceback.

    Attributes:
        result: the partial :class:`~memori_nb.models.SeedResult` (None when the run was
            interrupted before it began); also kept as the session's ``last_result``.
        results: the partial per-conversation results as a DataFrame, from the notebook
            helpers (``seed_dataframe``); else None.
    """

    def __init__(self, message: str, result=None) -> None:
        super().__init__(message)
        self.result = result
        self.results = None

    def _render_traceback_(self) -> list[str]:
        # IPython shows these lines instead of a traceback: the stop was asked for.
        return [str(self)]
