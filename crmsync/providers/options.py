"""What every provider plugin is configured with and handed: its ``Options`` base and the ``ProviderContext``.

A provider class declares ``Options`` (a subclass of ``ProviderOptions``); a ``[providers.NAME]`` table is
``type = "<entry-point name>"`` plus those options, flat in the same table, validated by that class at load time
(errors read ``providers.NAME.field: ...``). Kept apart from ``providers.base`` so the config can name it
without importing a provider.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ..support import SYSTEM_CLOCK, Clock


class ProviderOptions(BaseModel):
    """The keys every provider takes. A provider's own ``Options`` subclass adds its keys; unknown keys are errors."""

    # hide_input_in_errors: a raw ValidationError, should one ever be printed, carries no pasted secret
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    type: str = Field("", description="the provider's entry-point name, as written in [providers.NAME] type")
    model: str = Field(description="model name as the provider knows it")
    timeout_s: float = Field(60.0, gt=0, description="per-request timeout")
    max_retries: int = Field(2, ge=0, le=10, description="retries of 5xx/timeouts/refused connections before falling back")
    max_retry_after_s: float = Field(30.0, ge=0, description="our cap on a server's Retry-After before we fall back instead")
    max_output_tokens: int = Field(400, ge=64, le=8192)
    # Pacing (crmsync/providers/pacing.py): a rate limit is load, not an outage.
    requests_per_minute: int | None = Field(None, ge=1, description="this provider's request limit; requests are spaced evenly under it")
    tokens_per_minute: int | None = Field(
        None, ge=1, description="this provider's token limit (input + output, estimated before each request)"
    )
    max_rate_limit_wait_s: float = Field(
        60.0, ge=0, description="how long a lead may wait for a rate-limited (429) provider before falling back to the next step"
    )

    def paid(self) -> bool:
        """Whether calls cost money, so a model missing from [prices] is worth a warning in `crmsync check`.
        Local models and self-hosted servers override this to False."""
        return True


@dataclass(frozen=True)
class ProviderContext:
    """What crmsync hands every provider besides its options: where relative paths resolve, and the clock
    (tests inject one that moves by hand and never sleeps)."""

    base_dir: Path = field(default_factory=Path.cwd)  # the config file's folder
    clock: Clock = SYSTEM_CLOCK
