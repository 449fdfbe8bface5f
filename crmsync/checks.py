"""`crmsync check`: everything that can be wrong before the daemon starts, each with its fix."""

from __future__ import annotations

from .app import build_connector, build_provider, rubric_path, used_providers
from .config import Config, OutputFields, SecretMissing
from .connector import Connector
from .errors import ConfigError, ConnectorError, RubricError
from .models import Problem
from .providers.batch_api import BatchCapable
from .rubric import Rubric, load_rubric
from .scoring import system_prompt
from .support import redact

#: A system prompt past this many (estimated) tokens is sent with every lead: warn with what it costs.
MAX_PROMPT_TOKENS = 20_000
CHARS_PER_TOKEN = 4  # the usual estimate for English text; the providers' tokenizers are not installed here
REVIEW_VALUES = ("qualified", "unqualified")


def prompt_size_warning(config: Config, rubric: Rubric) -> Problem | None:
    """A rubric whose system prompt exceeds MAX_PROMPT_TOKENS: its estimated tokens and cost per lead."""
    text = system_prompt(rubric)
    tokens = len(text) // CHARS_PER_TOKEN
    if tokens <= MAX_PROMPT_TOKENS:
        return None
    costs = []
    for step in dict.fromkeys(s.provider for s in config.chain):
        price = config.prices.get(config.providers[step].model)
        if price is not None:
            cached = price.cached_input if price.cached_input is not None else price.input
            costs.append(f"{step}: ${tokens * price.input / 1e6:.4f} (${tokens * cached / 1e6:.4f} once cached)")
    cost = f"; input cost per lead {', '.join(costs)}" if costs else " (no [prices] for the chain's models, so no cost estimate)"
    return Problem(
        where="rubric",
        severity="warning",
        message=f"the system prompt is {len(text.encode()):,} bytes, about {tokens:,} input tokens sent with every lead "
        f"(more than {MAX_PROMPT_TOKENS:,}){cost}",
        fix="shorten the rubric (prompts/README.md); keep examples few and short",
    )


def option_problems(config: Config, connector: Connector, rubric: Rubric) -> list[Problem]:
    """Dropdown / picklist outputs must offer every value crmsync writes (or a reviewer must pick), else the
    CRM rejects the write later and the lead is parked."""
    needed: dict[str, list[str]] = {
        "tier": list(rubric.tiers),
        "review_decision": list(REVIEW_VALUES),
        "rubric_version": [rubric.version],
        "model": [f"{s.provider}:{config.providers[s.provider].model}" for s in config.chain],
    }
    problems = []
    for name, allowed in connector.output_options().items():
        fold = name == "review_decision"  # crmsync reads a decision case-insensitively
        have = {a.lower() if fold else a for a in allowed}
        missing = [v for v in dict.fromkeys(needed.get(name, [])) if (v.lower() if fold else v) not in have]
        if not missing:
            continue
        where = "fields.review_decision" if fold else f"fields.outputs.{name}"
        field = config.fields.review_decision if fold else getattr(config.fields.outputs, name)
        who = "a reviewer must be able to choose" if fold else "crmsync writes"
        problems.append(
            Problem(
                where=where,
                message=f"{field} is a list of options without {', '.join(missing)}; {who} {', '.join(needed[name])}",
                fix=f"add the option values {', '.join(missing)} to {field} in the CRM, or map {where.split('.')[-1]} to a text field",
            )
        )
    return problems


def outputs_off(config: Config) -> Problem | None:
    """Optional outputs left out of a [fields.outputs] table are not written: say so, so it is a choice."""
    off = [name for name, f in OutputFields.model_fields.items() if f.default is not None and getattr(config.fields.outputs, name) is None]
    if not off:
        return None
    return Problem(
        where="fields.outputs",
        severity="warning",
        message=f'not written (left out of [fields.outputs], or set to "" / false): {", ".join(off)}',
        fix="add the ones you want written to [fields.outputs]; leave the others out",
    )


def provider_problems(config: Config, name: str) -> list[Problem]:
    """Build the provider and run its own ``check()`` (key, endpoint, model), then close it; and warn when a
    paid model has no price."""
    options = config.providers[name]
    problems: list[Problem] = []
    if options.paid() and options.model not in config.prices:
        problems.append(
            Problem(
                where=f"prices.{options.model}",
                severity="warning",
                message=f"no price for model {options.model!r}: its cost will be recorded as 0",
                fix=f'add [prices."{options.model}"] with input, output and as_of',
            )
        )
    try:
        provider = build_provider(config, name)
    except SecretMissing as exc:  # unset, blank or non-ASCII: name the option that names the variable
        key = next((k for k, v in options if k.endswith("_env") and v == exc.var), None)
        return [
            *problems,
            Problem(
                where=f"providers.{name}" + (f".{key}" if key else ""),
                message=str(exc),
                fix=f"set {exc.var} in the service's environment file",
            ),
        ]
    except ConfigError as exc:  # a model file missing, an extra not installed
        return [*problems, Problem(where=f"providers.{name}", message=str(exc), fix=f"fix [providers.{name}] as the message says")]
    try:
        found = provider.check()
    except Exception as exc:  # a plugin's bug must not hide the other checks
        found = [redact(f"check() failed: {type(exc).__name__}: {exc}")]
    finally:
        provider.close()
    for i, step in enumerate(config.chain):
        if step.provider == name and step.batch != "never" and not isinstance(provider, BatchCapable):
            problems.append(
                Problem(
                    where=f"chain[{i}].batch",
                    severity="warning",
                    message=f'provider {name!r} (type {options.type}) has no batch API: batch = "{step.batch}" is ignored '
                    "and its leads are scored synchronously, at the full price",
                    fix='set batch = "never" here, or batch on an openai or anthropic provider',
                )
            )
    last = bool(config.chain) and config.chain[-1].provider == name  # nothing after it to answer instead
    for m in found:
        if isinstance(m, Problem):
            problems.append(m.model_copy(update={"severity": "error"}) if last else m)
        else:
            problems.append(Problem(where=f"providers.{name}", message=m, fix=f"fix [providers.{name}] or the service it names"))
    return problems


def run_checks(config: Config) -> list[Problem]:
    problems: list[Problem] = []
    if (off := outputs_off(config)) is not None:
        problems.append(off)
    rubric: Rubric | None = None
    try:
        rubric = load_rubric(rubric_path(config))
        if (big := prompt_size_warning(config, rubric)) is not None:
            problems.append(big)
    except RubricError as exc:
        problems.append(Problem(where="rubric", message=str(exc), fix="fix the prompt file as the message says"))
    for name in used_providers(config):
        problems += provider_problems(config, name)
    try:
        connector = build_connector(config)
    except ConfigError as exc:
        problems.append(Problem(where="crm", message=str(exc), fix="fix [crm] in the config"))
        return problems
    try:
        found = connector.check()
        problems += found
        if rubric is not None and not any(p.where.startswith("crm") for p in found):  # the CRM answers
            problems += option_problems(config, connector, rubric)
    except ConnectorError as exc:
        problems.append(
            Problem(where="crm", message=f"cannot reach the CRM: {exc}", fix="check the network, the credentials and [crm.options]")
        )
    finally:
        connector.close()
    return problems
