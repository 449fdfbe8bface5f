"""Secret hygiene in one place: the type of a config key that names an environment variable, the registry of
every secret value crmsync has read, and the one redactor applied to everything it prints or stores (log lines,
the ledger, `crmsync score` output, connector errors).

The registry is process-wide on purpose: secrets come from the process environment, and a value read by a
connector must be masked in the ledger and the log, which never see the connector.
"""

from __future__ import annotations

import re
import threading
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

#: Shorter values are not masked: masking them would garble ordinary text, and no real key is this short.
MIN_SECRET_LEN = 6
MASK = "***"

_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
#: The error type pydantic reports; ``format_validation_error`` never echoes the input of this one.
ENV_NAME_ERROR = "env_var_name"
ENV_NAME_MESSAGE = (
    "must be the NAME of an environment variable (upper-case letters, digits and _ such as OPENAI_API_KEY), "
    "not the key itself; the value you gave was not shown"
)


def _env_var_name(value: str) -> str:
    # A pasted key can look like a name (c4f1a9e2..., pat-na1-...): only the conventional shape passes, and the
    # error carries no trace of the value.
    if not _ENV_NAME.fullmatch(value):
        raise PydanticCustomError(ENV_NAME_ERROR, ENV_NAME_MESSAGE)
    return value


#: A config key holding the NAME of an environment variable that holds a secret (``api_key_env`` ...).
EnvVarName = Annotated[str, AfterValidator(_env_var_name)]


class Secrets:
    """Every secret value read so far; ``redact`` replaces each with ``***``, longest first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()

    def add(self, value: str | None) -> None:
        candidates = {v for v in (value, (value or "").strip()) if v and len(v) >= MIN_SECRET_LEN}
        with self._lock:
            # longest first, so a secret containing another is masked whole
            self._values = tuple(sorted(set(self._values) | candidates, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        return text

    def __len__(self) -> int:
        return len(self._values)


SECRETS = Secrets()


def register_secret(value: str | None) -> None:
    """Mask ``value`` from now on, wherever crmsync prints or stores text."""
    SECRETS.add(value)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    return SECRETS.redact(text) if text else text
