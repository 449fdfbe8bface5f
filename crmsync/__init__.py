"""crmsync: advisory LLM lead scores, written back into your CRM.

The names below are the public surface for connector and provider authors, with ``crmsync.support`` (what they
share: the retry policy, the clock, masking, the label rule); everything else may change.
"""

from .config import Config as Config
from .config import FieldsConfig as FieldsConfig
from .config import load_config as load_config
from .config import require_env as require_env
from .connector import (
    Bookmark as Bookmark,
)
from .connector import (
    Connector as Connector,
)
from .connector import (
    ConnectorContext as ConnectorContext,
)
from .connector import (
    ConnectorOptions as ConnectorOptions,
)
from .connector import (
    LabelRecord as LabelRecord,
)
from .connector import (
    ScoreUpdate as ScoreUpdate,
)
from .connector import (
    output_values as output_values,
)
from .errors import (
    ApiBudgetExhausted as ApiBudgetExhausted,
)
from .errors import (
    ConfigError as ConfigError,
)
from .errors import (
    ConnectorError as ConnectorError,
)
from .errors import (
    CrmsyncError as CrmsyncError,
)
from .errors import (
    FatalConnectorError as FatalConnectorError,
)
from .errors import (
    RetriableConnectorError as RetriableConnectorError,
)
from .models import CrmLead as CrmLead
from .models import ModelAnswer as ModelAnswer
from .models import Problem as Problem
from .models import Usage as Usage
from .models import WriteOutcome as WriteOutcome
from .providers.base import Prompt as Prompt
from .providers.base import Provider as Provider
from .providers.base import Repair as Repair
from .providers.base import Reply as Reply
from .providers.options import ProviderContext as ProviderContext
from .providers.options import ProviderOptions as ProviderOptions
from .support import EnvVarName as EnvVarName
from .support import redact as redact
from .support import register_secret as register_secret

__version__ = "0.1.0"
