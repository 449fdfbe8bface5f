"""The composition root: builds providers, the chain, the scorer and the connector from a Config. Plugins are
found through the registry (the config, for validating provider options, looks them up too)."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from . import registry
from .config import Config, format_validation_error
from .config_providers import provider_class
from .connector import Connector, ConnectorContext
from .errors import ConfigError
from .guard import Guard
from .injection import PatternSet
from .learning.calibrate import Calibrations
from .providers.base import Provider
from .providers.chain import Chain, Cooldowns
from .providers.options import ProviderContext
from .rubric import RubricStore, bundled_rubric_path
from .scoring import Scorer
from .support import SYSTEM_CLOCK, Clock


def rubric_path(config: Config) -> Path:
    return config.path(config.rubric.path) if config.rubric.path else bundled_rubric_path()


def build_provider(config: Config, name: str, context: ProviderContext | None = None) -> Provider:
    """The provider ``[providers.NAME]`` describes, built by the class its ``type`` names (an entry point)."""
    options = config.providers[name]
    cls = provider_class(options.type, f"providers.{name}.type")
    return cls(name, options, context or ProviderContext(base_dir=config.base_dir))


def used_providers(config: Config) -> list[str]:
    """The providers the chain and the guard use, in order, each once."""
    return list(dict.fromkeys([*(s.provider for s in config.chain), *([config.guard.provider] if config.guard.provider else [])]))


def build_scorer(config: Config, *, clock: Clock = SYSTEM_CLOCK, rubrics: RubricStore | None = None) -> Scorer:
    """The scorer over the configured chain. The caller owns it: ``Scorer.close()`` closes every provider."""
    rubrics = rubrics or RubricStore(rubric_path(config))  # a broken rubric fails before any provider is built
    providers: dict[str, Provider] = {}
    errors: list[str] = []
    for name in used_providers(config):  # collect every missing key at once rather than one per start
        try:
            providers[name] = build_provider(config, name, ProviderContext(base_dir=config.base_dir, clock=clock))
        except ConfigError as exc:
            errors.append(str(exc))
    if errors:
        for p in providers.values():
            p.close()
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
    return Scorer(
        chain,
        rubrics,
        max_input_chars=config.scoring.max_input_chars,
        guard=build_guard(config, providers, chain),
        calibration=Calibrations(config.state_dir, config.review.probability_band).apply,
    )  # issue 15: P(qualified)


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
    cls: type[Connector] = registry.load_class(registry.CONNECTORS, config.crm.type, Connector, "[crm] type")
    try:
        options = cls.Options.model_validate(config.crm.options)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, config.source, "", cls.Options, prefix="crm.options.")) from None
    config.state_dir.mkdir(parents=True, exist_ok=True)
    return cls(options, ConnectorContext(fields=config.fields, base_dir=config.base_dir, state_dir=config.state_dir))
