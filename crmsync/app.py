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
from .guard import Guard
from .injection import PatternSet
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
    used = list(dict.fromkeys([*(step.provider for step in config.chain), *([config.guard.provider] if config.guard.provider else [])]))
    providers: dict[str, Provider] = {}
    errors: list[str] = []
    for name in used:  # collect every missing key at once rather than one per start
        try:
            providers[name] = build_provider(name, config.providers[name], config.base_dir)
        except ConfigError as exc:
            errors.append(str(exc))
    if errors:
        raise ConfigError("\n".join(errors))
    cooldowns = Cooldowns(config.cooldown, clock=clock)
    chain = Chain(
        config.chain,
        {name: providers[name] for name in dict.fromkeys(step.provider for step in config.chain)},
        review=config.review,
        cooldowns=cooldowns,
        prices=config.prices,
        repair_attempts=config.scoring.repair_attempts,
    )
    return Scorer(chain, rubrics or RubricStore(rubric_path(config)), max_input_chars=config.scoring.max_input_chars,
                  guard=build_guard(config, providers, chain))


def build_guard(config: Config, providers: dict[str, Provider], chain: Chain) -> Guard:
    """The hostile-lead guard ([guard]): bundled + ops patterns, top-tier consistency, the optional guard model.
    Key inputs and fit ranges apply only to inputs this config sends ([fields] inputs)."""
    g = config.guard
    extra = config.path(g.patterns_file) if g.patterns_file else None
    guard_provider = providers.get(g.provider) if g.provider else None
    return Guard(
        PatternSet(extra),
        tiers=g.tiers,
        key_inputs=[k for k in g.key_inputs if k in config.fields.inputs],
        fit={k: (v.min, v.max) for k, v in g.fit.items() if k in config.fields.inputs},
        provider=guard_provider,
        chain=chain,
    )


def build_connector(config: Config) -> Connector:
    cls = registry.load_connector_class(config.crm.type)
    try:
        options = cls.Options.model_validate(config.crm.options)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, config.source, "", cls.Options, prefix="crm.options.")) from None
    config.state_dir.mkdir(parents=True, exist_ok=True)
    return cls(options, ConnectorContext(fields=config.fields, base_dir=config.base_dir, state_dir=config.state_dir))
