"""``[providers.NAME]`` tables: ``type`` names a provider plugin (the ``crmsync.providers`` entry points,
built-ins included) and the rest of the table is that plugin's ``Options``, validated at load time.

Errors keep their place in the file (``providers.NAME.field``) and a misspelt key is matched against the
plugin's own keys ("did you mean"). ``crmsync.config`` uses ``ProviderTable``; nothing else needs this module.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any

from pydantic import PlainValidator, SerializeAsAny, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

from . import registry
from .config_errors import PLUGIN_TYPE
from .providers.base import Provider
from .providers.options import ProviderOptions

_BUILTIN_ERRORS = frozenset(typing.get_args(core_schema.ErrorType))


def provider_class(type_name: str, where: str) -> type[Provider]:
    """The provider class for ``type``; raises ``registry.PluginError`` (no such provider, not importable, not
    a Provider, or its ``Options`` not a ``ProviderOptions``)."""
    cls: type[Provider] = registry.load_class(registry.PROVIDERS, type_name, Provider, where)
    if not (isinstance(cls.Options, type) and issubclass(cls.Options, ProviderOptions)):
        raise registry.PluginError(where, type_name, f"{cls.__qualname__}.Options is not a ProviderOptions subclass.")
    return cls


def _one_error(loc: tuple[Any, ...], kind: str, message: str, value: Any) -> ValidationError:
    error = PydanticCustomError(kind, "{message}", {"message": message})
    return ValidationError.from_exception_data("ProviderOptions", [InitErrorDetails(type=error, loc=loc, input=value)], hide_input=True)


def _validate(table: Any) -> ProviderOptions:
    if isinstance(table, ProviderOptions):  # already validated (a Config built in code)
        return table
    if not isinstance(table, dict):
        raise PydanticCustomError("dict_type", 'must be a table: type = "..." and the provider\'s options')
    type_name = table.get("type")
    if not isinstance(type_name, str) or not type_name:
        installed = ", ".join(registry.available(registry.PROVIDERS)) or "none"
        raise _one_error(("type",), PLUGIN_TYPE, f"`type` is missing: name the provider (installed: {installed}).", table)
    try:
        cls = provider_class(type_name, "type")
    except registry.PluginError as exc:
        raise _one_error(("type",), PLUGIN_TYPE, f"{type_name!r}: {exc.reason}", type_name) from None
    try:
        return cls.Options.model_validate(table)
    except ValidationError as exc:
        raise _with_known_keys(exc, cls.Options) from None


def _with_known_keys(exc: ValidationError, options: type[ProviderOptions]) -> ValidationError:
    """The same errors, an unknown key carrying the plugin's own keys for the "did you mean" hint (the config's
    model only knows the ProviderOptions base)."""
    known = [k for k in options.model_fields if k != "type"]
    details: list[InitErrorDetails] = []
    for e in exc.errors():
        ctx = dict(e.get("ctx") or {})
        if e["type"] == "extra_forbidden":
            ctx["known"] = known
        if e["type"] in _BUILTIN_ERRORS and e["type"] != "extra_forbidden":
            details.append(InitErrorDetails(type=e["type"], loc=e["loc"], input=e["input"], ctx=ctx))
        else:  # custom types (the env-var-name check) and the hinted unknown key keep their message as written
            details.append(
                InitErrorDetails(
                    type=PydanticCustomError(e["type"], e["msg"].replace("{", "{{").replace("}", "}}"), ctx), loc=e["loc"], input=e["input"]
                )
            )
    return ValidationError.from_exception_data(exc.title, details, hide_input=True)


#: A ``[providers.NAME]`` table, validated by its type's ``Options``.
ProviderTable = Annotated[SerializeAsAny[ProviderOptions], PlainValidator(_validate)]  # dumped as its own class
