"""Small, public helpers shared by crmsync's core, its providers and every connector (built-in or third-party).

Each lives here once, so no connector or provider keeps its own copy that drifts:

- ``EnvVarName``: a config key holding the NAME of an environment variable; a pasted secret is refused and
  never echoed. ``register_secret`` / ``redact``: the one redactor (log lines, ledger, outputs, errors).
- ``parse_retry_after`` and ``RetryPolicy``: the one retry policy (tenacity), with the clock injected.
- ``Clock`` / ``SystemClock``: the one way time is injected (the fake lives in tests/).
- ``harvest_label`` / ``LabelRecord``: the one label-harvesting rule (review, then conversion, then lost).

Nothing here imports the rest of crmsync: it sits at the bottom of the import layers (pyproject.toml).
"""

from .clock import SYSTEM_CLOCK as SYSTEM_CLOCK
from .clock import Clock as Clock
from .clock import SystemClock as SystemClock
from .labels import DECISIONS as DECISIONS
from .labels import LabelRecord as LabelRecord
from .labels import harvest_label as harvest_label
from .labels import one_of as one_of
from .masking import ENV_NAME_ERROR as ENV_NAME_ERROR
from .masking import ENV_NAME_MESSAGE as ENV_NAME_MESSAGE
from .masking import MASK as MASK
from .masking import MIN_SECRET_LEN as MIN_SECRET_LEN
from .masking import SECRETS as SECRETS
from .masking import EnvVarName as EnvVarName
from .masking import Secrets as Secrets
from .masking import redact as redact
from .masking import register_secret as register_secret
from .retry import GiveUp as GiveUp
from .retry import RetryPolicy as RetryPolicy
from .retry import parse_retry_after as parse_retry_after
from .retry import server_wait as server_wait
