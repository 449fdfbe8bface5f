"""One error taxonomy, grouped by what the caller should do about it."""

from __future__ import annotations


class CrmsyncError(Exception):
    """Root of every error crmsync raises on purpose."""

    exit_code = 1  # the CLI's exit status for this error (README, Operations: exit codes)


class ConfigError(CrmsyncError):
    """The config file, the rubric or the environment is wrong: a person must fix it.

    The message always names the file or variable, the key, and what is expected.
    """


class RubricError(ConfigError):
    """A rubric (prompt) file is malformed."""


class ProviderUnavailable(CrmsyncError):
    """A provider could not answer now (429, 5xx, 529, timeout, refused connection): try the next step.

    ``retry_after`` is what the server asked for, in seconds, if it said.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class ProviderRejected(CrmsyncError):
    """The provider refused the request itself (401, 403, 400, 404): a configuration error, not load."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class InvalidAnswer(CrmsyncError):
    """The model answered, but not with a valid score (malformed JSON, schema violation, refusal, truncation).

    Carries the evidence so the ledger and the review flag can explain themselves.
    """

    def __init__(self, kind: str, message: str, *, raw: str | None = None, usage: object | None = None) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.raw = raw
        self.usage = usage


class ConnectorError(CrmsyncError):
    """A CRM call failed as a whole."""


class RetriableConnectorError(ConnectorError):
    """The CRM is busy or unreachable (5xx, 429, dropped connection): try again later."""


class FatalConnectorError(ConnectorError):
    """The CRM refused us (auth, permissions, a missing field, the API budget): stop that CRM's work and tell a person."""


class ApiBudgetExhausted(RetriableConnectorError):
    """The CRM's API allowance (or our configured share of it) is used up: start no new work until it recovers."""


class LedgerError(CrmsyncError):
    """The ledger (or the state directory holding it) cannot be used: read-only, full disk, damaged, empty.

    The message names the file, what happened and what to do. The file is always left as it is.
    """

    exit_code = 4


class AlreadyRunningError(CrmsyncError):
    """Another crmsync holds this state directory; the message names it (pid, host, since when)."""

    exit_code = 3
