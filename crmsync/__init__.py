"""crmsync: advisory LLM lead scores, written back into your CRM.

The names below are the public surface for connector authors; everything else may change.
"""
from .config import Config as Config, FieldsConfig as FieldsConfig, load_config as load_config, require_env as require_env
from .connector import (
    Bookmark as Bookmark,
    Connector as Connector,
    ConnectorContext as ConnectorContext,
    ConnectorOptions as ConnectorOptions,
    LabelRecord as LabelRecord,
    ScoreUpdate as ScoreUpdate,
    output_values as output_values,
)
from .errors import (
    ConfigError as ConfigError,
    ConnectorError as ConnectorError,
    CrmsyncError as CrmsyncError,
    FatalConnectorError as FatalConnectorError,
    RetriableConnectorError as RetriableConnectorError,
    ApiBudgetExhausted as ApiBudgetExhausted,
)
from .masking import EnvVarName as EnvVarName, redact as redact, register_secret as register_secret
from .models import CrmLead as CrmLead, Problem as Problem, WriteOutcome as WriteOutcome

__version__ = "0.1.0"
