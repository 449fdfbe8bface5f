"""``type = "learned"``: the model `crmsync train model --promote` fitted on this org's labeled leads, answering like
any provider (a score 0–100 and a confidence) instantly and at no cost, so it can be the chain's first step with
``escalate_below`` sending only its uncertain band to an LLM. Needs the ``learn`` extra (scikit-learn).

It reads the lead's mapped inputs from ``Prompt.inputs``, never the prompt text. It re-reads the serving version
when `crmsync train` promotes or rolls back (no restart), and while no model serves it answers "unavailable", so
the chain falls back to the next step: on day zero a chain with a learned first step is simply the LLM chain.
Every lead it scores feeds the drift window next to the model (crmsync/learning/drift.py).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from ..errors import ConfigError, ProviderUnavailable
from ..learning.artefact import ArtefactError, Store, Version
from ..learning.drift import WINDOW_FILE, Window
from ..learning.features import FeatureSpec, to_matrix
from ..learning.train import to_score
from ..models import ModelAnswer, Problem, Usage
from .base import Prompt, Provider, Repair, Reply
from .options import ProviderContext, ProviderOptions

RELOAD_S = 5.0  # how often the CURRENT pointer is looked at
_COLUMN = re.compile(r"^(num|cat)__(?:missingindicator_)?x(\d+)(?:_(.*))?$")


class LearnedOptions(ProviderOptions):
    model: str = Field("learned", description="shown until a model serves; then the serving version's hash (learned-<hash>)")
    max_retries: int = Field(0, ge=0, le=10, description="in-process: nothing transient to retry")
    path: str = Field(
        "crmsync-data/models/model",
        description="the model store `crmsync train model` writes: <state_dir>/models/model (relative to the config file)",
    )
    reasons: bool = Field(True, description="name the inputs that moved the score most (logistic regression only)")

    def paid(self) -> bool:
        return False  # runs in this process, costs nothing


class LearnedProvider(Provider):
    Options = LearnedOptions

    def __init__(self, name: str, options: LearnedOptions, context: ProviderContext | None = None) -> None:
        super().__init__(name, options, context)
        self.opts = options
        try:
            import sklearn  # noqa: F401  (the joblib'd model is made of sklearn objects)
        except ImportError:
            raise ConfigError(f"provider {name!r} (type learned) needs scikit-learn: pip install 'crmsync[learn]'") from None
        path = Path(options.path).expanduser()
        self.store = Store(path if path.is_absolute() else self.context.base_dir / path)
        self._lock = threading.Lock()
        self._checked = float("-inf")
        self._mtime: float | None = None
        self.version: Version | None = None
        self.bundle: Mapping[str, Any] | None = None
        self.window: Window | None = None
        self._problem: str | None = None
        self._none_serving = False  # nothing promoted yet (not a broken artefact): a warning in `crmsync check`

    def _refresh(self) -> None:
        now = self.context.clock.monotonic()
        with self._lock:
            if now - self._checked < RELOAD_S:
                return
            self._checked = now
            mtime = self.store.pointer_mtime()
            if mtime == self._mtime and (self.bundle is not None or self._problem):
                return
            self._mtime = mtime
            if self.window is not None:
                self.window.flush()
            try:
                version = self.store.current()
                self._none_serving = version is None
                if version is None:
                    raise ArtefactError(f"no learned model is serving under {self.store.root}: run `crmsync train model --promote`")
                bundle = self.store.load(version)
                card = version.card()
            except (ArtefactError, OSError, ValueError) as exc:
                self.version, self.bundle, self.window, self._problem = None, None, None, str(exc)
                return
            self.version, self.bundle, self._problem = version, bundle, None
            self.model = f"learned-{version.hash}"
            self.window = Window(card["drift_baseline"], version.path / WINDOW_FILE) if card.get("drift_baseline") else None

    def check(self) -> list[str | Problem]:
        self._checked = float("-inf")
        self._refresh()
        if self._problem and self._none_serving:  # day zero: the chain still scores with the next step
            return [
                Problem(
                    where=f"providers.{self.name}",
                    severity="warning",
                    message=f"{self._problem}; until then every lead goes to the next chain step",
                    fix="collect labels (`crmsync labels pull`), then `crmsync train model --promote`",
                )
            ]
        return [self._problem] if self._problem else []

    def _ask(self, prompt: Prompt, repair: Repair | None) -> Reply:
        self._refresh()
        bundle, version, window = self.bundle, self.version, self.window
        if bundle is None or version is None:
            raise ProviderUnavailable(f"{self.name}: {self._problem}")
        spec = FeatureSpec.from_dict(bundle["spec"])
        X = to_matrix(spec, [prompt.inputs])
        pipe = bundle["pipeline"]
        p = float(pipe.predict_proba(X)[0, 1])
        score, confidence = to_score(p, int(bundle["qualified_cut"]), float(bundle["threshold"]))
        reasons = [f"learned model {version.name}: raw P {p:.2f} (qualified from {bundle['threshold']:g})"]
        if self.opts.reasons:
            reasons = (_top_inputs(pipe, X, spec, p >= bundle["threshold"]) + reasons)[:3]
        missing = [n for n in spec.columns if prompt.inputs.get(n) in (None, "")][:8]
        answer = ModelAnswer(
            score=score, confidence=confidence, reasons=reasons, missing_or_contradictory=missing, lead_text_contains_instructions=False
        )
        if window is not None:
            window.add(prompt.inputs, score)
        return Reply(answer=answer, usage=Usage(), raw=json.dumps(answer.model_dump()))

    def close(self) -> None:
        if self.window is not None:
            self.window.flush()


def _top_inputs(pipe: Any, X: Any, spec: FeatureSpec, up: bool, n: int = 2) -> list[str]:
    """The inputs whose terms pushed a logistic regression's answer most in its direction ("poutcome=success +1.9")."""
    coef = getattr(pipe.named_steps["model"], "coef_", None)
    if coef is None:
        return []
    features = pipe.named_steps["features"]
    try:
        named = zip(features.get_feature_names_out(), features.transform(X)[0] * coef[0], strict=True)
        terms = sorted(named, key=lambda t: -t[1] if up else t[1])
    except (AttributeError, ValueError):  # reasons are a courtesy: never a reason to fail a score
        return []
    out = []
    for col, term in terms[:n]:
        m = _COLUMN.match(col)
        if not m or (term <= 0 if up else term >= 0):
            continue
        name = spec.columns[int(m.group(2))]
        out.append(f"{name}={m.group(3)} ({term:+.2f})" if m.group(3) else f"{name} ({term:+.2f})")
    return out
