"""A third-party provider plugin, as someone outside crmsync would write one: registered through a real
``crmsync.providers`` entry point (tests/test_provider_plugins.py writes its dist-info), imported by nobody
in crmsync/.

It scores from ``Prompt.inputs`` (no language model): more monthly orders, a higher score. It knows two
models; any other name is a problem ``check()`` reports. With ``record_file`` set, it appends one line when
it is built and one when it is closed, so a test can see that every command closes what it opened.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from crmsync import ModelAnswer, Prompt, Provider, ProviderContext, ProviderOptions, Repair, Reply, Usage  # the public surface only

MODELS = ("toy-1", "toy-2")


class ToyOptions(ProviderOptions):
    model: str = "toy-1"
    orders_for_top: int = Field(10_000, ge=1, description="monthly orders that earn a score of 100")
    record_file: str | None = Field(None, description="append 'open NAME' / 'close NAME' lines here")

    def paid(self) -> bool:
        return False


class ToyProvider(Provider):
    Options = ToyOptions

    def __init__(self, name: str, options: ToyOptions, context: ProviderContext | None = None) -> None:
        super().__init__(name, options, context)
        self.cfg = options
        self.record = self.context.base_dir / options.record_file if options.record_file else None
        self.closed = False
        self._note("open")

    def _note(self, event: str) -> None:
        if self.record is not None:
            with Path(self.record).open("a", encoding="utf-8") as fh:
                fh.write(f"{event} {self.name}\n")

    def _ask(self, prompt: Prompt, repair: Repair | None) -> Reply:
        assert not self.closed, "scored after close()"
        orders = prompt.inputs.get("monthly_orders")
        try:
            n = float(orders) if orders is not None else 0.0
        except (TypeError, ValueError):
            n = 0.0
        score = int(min(100, max(0, round(100 * n / self.cfg.orders_for_top))))
        answer = ModelAnswer(
            score=score,
            confidence=0.9 if orders is not None else 0.4,
            reasons=[f"{n:,.0f} orders a month"],
            missing_or_contradictory=[] if orders is not None else ["monthly_orders"],
            lead_text_contains_instructions=False,
        )
        return Reply(answer=answer, usage=Usage(), raw=answer.model_dump_json())

    def check(self) -> list[str]:
        if self.cfg.model not in MODELS:
            return [f"toy has no model {self.cfg.model!r}; it knows {', '.join(MODELS)}"]
        return []

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._note("close")
