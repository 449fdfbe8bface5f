"""Config errors a person can act on: each names the file, the key (as written, with its line) and what is
expected, suggests the key meant for a misspelt one, and never echoes what may be a pasted secret.
``crmsync.config`` re-exports ``format_validation_error``; connectors use it for their ``[crm.options]``."""

from __future__ import annotations

import difflib
import re
import typing
from typing import Annotated, Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from .support import ENV_NAME_ERROR

#: The error type of a ``type`` that names no usable plugin (config_providers.py); the message is the registry's.
PLUGIN_TYPE = "plugin_type"


def _line_of(text: str, key: str, table: tuple[Any, ...] = ()) -> int | None:
    """The line of ``key = ...``, searched from its table's header when there is one (many tables have a `type`)."""
    start = 0
    if table and not any(isinstance(x, int) for x in table):
        header = re.search(r"^\s*\[\s*" + r"\s*\.\s*".join(rf"\"?{re.escape(str(x))}\"?" for x in table) + r"\s*\]", text, re.M)
        start = header.end() if header else 0
    m = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=", re.M).search(text, start)
    return text.count("\n", 0, m.start()) + 1 if m else None


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Best effort: the keys allowed where an unknown key was found (for 'did you mean')."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        ann = fields[part].annotation
        current = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    fields = getattr(current, "model_fields", {}) if current else {}
    return [k for k in fields if k not in ("base_dir", "source")]


def _tag_positions(model: type[BaseModel], loc: tuple[Any, ...]) -> set[int]:
    """Positions in ``loc`` holding a discriminated union's tag, which pydantic inserts (providers.fast.openai.model,
    auth.password.password_env): not keys a person wrote. Found by walking the models, so a provider may well be
    named "openai"."""
    tags: set[int] = set()
    current: Any = model
    i = 0
    while i < len(loc) and current is not None:
        info = getattr(current, "model_fields", {}).get(loc[i])
        if info is None:
            break
        ann, disc, i = info.annotation, info.discriminator, i + 1
        if typing.get_origin(ann) in (dict, list):  # skip the dict key / list index
            ann, i = typing.get_args(ann)[-1], i + 1
            if typing.get_origin(ann) is Annotated:
                ann, *meta = typing.get_args(ann)
                disc = next((m.discriminator for m in meta if isinstance(m, FieldInfo) and m.discriminator), None)
        if isinstance(disc, str) and i < len(loc):
            members = [m for m in typing.get_args(ann) if loc[i] in typing.get_args(m.model_fields[disc].annotation)]
            tags.add(i)
            current, i = (members[0] if members else None), i + 1
        else:
            current = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return tags


def format_validation_error(exc: ValidationError, filename: str, text: str, model: type[BaseModel], prefix: str = "") -> str:
    lines = [f"{filename}: {exc.error_count()} problem(s):"]
    for err in exc.errors():
        loc = tuple(err["loc"])
        tags = _tag_positions(model, loc)
        shown = [str(x) for i, x in enumerate(loc) if i not in tags]
        key = prefix + (".".join(f"[{x}]" if x.isdigit() else x for x in shown).replace(".[", "[") or "(top level)")
        last = str(loc[-1]) if loc else ""
        line = _line_of(text, last, loc[:-1]) if last and not last.isdigit() else None
        at = f" (line {line})" if line else ""
        kind = err["type"]
        if kind == "extra_forbidden":  # a plugin's options carry their own keys (config_providers.py)
            known = (err.get("ctx") or {}).get("known") or _known_keys(model, loc)
            hint = difflib.get_close_matches(last, known, n=1)
            mean = f"; did you mean `{hint[0]}`?" if hint else ""
            lines.append(f"  - `{key}`{at}: unknown key{mean} Remove it or fix its spelling.")
        elif kind == PLUGIN_TYPE:  # no such provider, not importable, not a Provider: the registry's words
            lines.append(f"  - `{key}`{at}: {err['msg']}")
        elif kind == "missing":
            lines.append(f"  - `{key}`: missing required key. Add it (see config.example.toml).")
        elif kind == "union_tag_invalid" or kind == "union_tag_not_found":
            ctx = err.get("ctx") or {}
            disc = str(ctx.get("discriminator", "'type'")).strip("'")
            if "expected_tags" in ctx:
                lines.append(f"  - `{key}`{at}: `{disc}` must be one of {str(ctx['expected_tags']).replace(chr(39), '')}.")
            else:
                lines.append(f"  - `{key}`{at}: `{disc}` is missing. Add it (see config.example.toml).")
        else:
            got = err.get("input")
            # never echo what may be a pasted secret: env-var-name keys (whatever their value) and secret-ish keys
            secretish = (
                kind == ENV_NAME_ERROR
                or last.endswith("_env")
                or any(w in last.lower() for w in ("secret", "password", "api_key", "access_token", "private_key"))
            )
            got_s = "" if isinstance(got, dict) or secretish else f", got {got!r}"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  - `{key}`{at}: {msg}{got_s}." if key != "(top level)" else f"  - {msg}.")
    return "\n".join(lines)
