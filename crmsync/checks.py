"""`crmsync check`: everything that can be wrong before the daemon starts, each with its fix."""
from __future__ import annotations

import os
from .app import build_connector, rubric_path
from .config import Config, LlamaCppProviderConfig
from .errors import ConfigError, ConnectorError, RubricError
from .models import Problem
from .rubric import load_rubric


def run_checks(config: Config) -> list[Problem]:
    problems: list[Problem] = []
    try:
        load_rubric(rubric_path(config))
    except RubricError as exc:
        problems.append(Problem(where="rubric", message=str(exc), fix="fix the prompt file as the message says"))
    for step in config.chain:
        cfg = config.providers[step.provider]
        if isinstance(cfg, LlamaCppProviderConfig):
            if cfg.model_path != "smollm2" and not config.path(cfg.model_path).is_file():
                problems.append(Problem(where=f"providers.{step.provider}.model_path", message=f"{config.path(cfg.model_path)} does not exist", fix="point model_path at a .gguf file"))
            continue
        if not os.environ.get(cfg.api_key_env, "").strip():
            problems.append(Problem(where=f"providers.{step.provider}.api_key_env", message=f"environment variable {cfg.api_key_env} is not set",
                                    fix=f"set {cfg.api_key_env} in the service's environment file"))
        if cfg.model not in config.prices and not cfg.base_url:
            problems.append(Problem(where=f"prices.{cfg.model}", message=f"no price for model {cfg.model!r}: its cost will be recorded as 0",
                                    fix=f'add [prices."{cfg.model}"] with input, output and as_of', severity="warning"))
    try:
        connector = build_connector(config)
    except ConfigError as exc:
        problems.append(Problem(where="crm", message=str(exc), fix="fix [crm] in the config"))
        return problems
    try:
        problems += connector.check()
    except ConnectorError as exc:
        problems.append(Problem(where="crm", message=f"cannot reach the CRM: {exc}", fix="check the network, the credentials and [crm.options]"))
    finally:
        connector.close()
    return problems
