"""The composition root: builds providers, the chain, the scorer and the connector from a Config.
The only caller of the registry."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from . import registry
from .config import AnthropicProviderConfig, Config, LlamaCppProviderConfig, OpenAIProviderConfig, format_validation_error
from .connector import Connector, ConnectorContext
from .errors import ConfigError
from .providers.base import Provider
from .providers.chain import Chain, Cooldowns
from .rubric import RubricStore, bundled_rubric_path
from .scoring import Scorer


def rubric_path(config: Config) -> Path:
    return config.path(config.rubric.path) if config.rubric.path else bundled_rubric_path()


def build_provider(name: str, cfg: object, base_dir: Path) -> Provider:
    if isinstance(cfg, OpenAIProviderConfig):
        from .providers.openai_provider import OpenAIProvider

        return OpenAIProvider(name, cfg)
    if isinstance(cfg, AnthropicProviderConfig):
        from .providers.anthropic_provider import AnthropicProvider

        return AnthropicProvider(name, cfg)
    if isinstance(cfg, LlamaCppProviderConfig):
        from .providers.llamacpp_provider import LlamaCppProvider

        return LlamaCppProvider(name, cfg, base_dir=base_dir)
    raise ConfigError(f"provider {name!r}: unknown type")


def build_scorer(config: Config, *, clock: Callable[[], float] = time.monotonic, rubrics: RubricStore | None = None) -> Scorer:
    used = list(dict.fromkeys(step.provider for step in config.chain))
    providers: dict[str, Provider] = {}
    errors: list[str] = []
    for name in used:  # collect every missing key at once rather than one per start
        try:
            providers[name] = build_provider(name, config.providers[name], config.base_dir)
        except ConfigError as exc:
            errors.append(str(exc))
    if errors:
        raise ConfigError("\n".join(errors))
    chain = Chain(
        config.chain,
        providers,
        review=config.review,
        cooldowns=Cooldowns(config.cooldown, clock=clock),
        prices=config.prices,
        repair_attempts=config.scoring.repair_attempts,
    )
    return Scorer(chain, rubrics or RubricStore(rubric_path(config)))


def build_connector(config: Config) -> Connector:
    cls = registry.load_connector_class(config.crm.type)
    try:
        options = cls.Options.model_validate(config.crm.options)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, config.source, "", cls.Options, prefix="crm.options.")) from None
    config.state_dir.mkdir(parents=True, exist_ok=True)
    return cls(options, ConnectorContext(fields=config.fields, base_dir=config.base_dir, state_dir=config.state_dir))
