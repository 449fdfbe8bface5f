"""Local HTTP emulators of the OpenAI Chat Completions and Anthropic Messages APIs, for tests.

from tests.emulators import OpenAIEmulator, AnthropicEmulator, answer, error

with OpenAIEmulator() as oa:
    oa.script("gpt-x", error(429, retry_after=0.01), answer({"score": 80}))
    client = openai.OpenAI(base_url=oa.base_url, api_key=oa.api_key)
"""

from ._http import RecordedRequest
from .anthropic_api import AnthropicEmulator
from .behaviours import (
    Behaviour,
    answer,
    default_rule,
    delay,
    drop,
    error,
    extract_lead,
    ntokens,
    raw,
    refusal,
    rule,
    truncated,
)
from .openai_api import OpenAIEmulator

__all__ = [
    "AnthropicEmulator",
    "Behaviour",
    "OpenAIEmulator",
    "RecordedRequest",
    "answer",
    "default_rule",
    "delay",
    "drop",
    "error",
    "extract_lead",
    "ntokens",
    "raw",
    "refusal",
    "rule",
    "truncated",
]
