"""The batch emulators against the real SDKs: documented shapes, validation, request-level errors, expiry,
cancellation; and crmsync's providers reading them (the same parse path as a synchronous answer)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import anthropic
import openai
import pytest

from crmsync.errors import ProviderUnavailable
from crmsync.providers.anthropic_provider import AnthropicOptions, AnthropicProvider
from crmsync.providers.base import Prompt
from crmsync.providers.batch_api import BatchCapable, BatchRequest, custom_id
from crmsync.providers.openai_provider import OpenAIOptions, OpenAIProvider
from tests.emulators import default_rule, raw, rule
from tests.emulators.anthropic_batch import AnthropicBatchEmulator
from tests.emulators.openai_batch import OpenAIBatchEmulator

LEAD = {"company": "Acme", "employees": 120, "monthly_orders": 12000, "title": "VP Ops"}
PROMPT = Prompt(system="You score leads.", user="Score this lead.\n```json\n" + json.dumps(LEAD) + "\n```", cache_key="crmsync-1")


def test_openai_batch_lifecycle_files_and_request_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenAIBatchEmulator() as oa:
        monkeypatch.setenv("K_OA", oa.api_key)
        p = OpenAIProvider("fast", OpenAIOptions(type="openai", model="m", base_url=oa.base_url, api_key_env="K_OA"))
        assert isinstance(p, BatchCapable)
        oa.hold().fail_requests({1}, status=500)
        oa.script("m", raw("{not json"), rule(default_rule))
        bid = p.submit_batch("cs00ff", [BatchRequest(custom_id("cs00ff", n), PROMPT) for n in range(4)])
        assert oa.batches[bid].metadata == {"crmsync_batch": "cs00ff"}
        state = p.poll_batch(bid)
        assert (state.status, state.ended, state.counts) == ("in_progress", False, {"completed": 0, "failed": 0, "total": 4})
        at = datetime.fromtimestamp(oa.batches[bid].created, UTC)
        assert p.find_batch("cs00ff", at, 4, set()) == bid  # by the metadata set at submission
        assert p.find_batch("cs0bad", at, 4, set()) is None
        oa.expire(bid, processed=3)
        state = p.poll_batch(bid)
        assert (state.status, state.ended, state.counts) == ("expired", True, {"completed": 2, "failed": 2, "total": 4})
        items = {i.custom_id: i for i in p.batch_results(bid)}
        assert items["cs00ff-0"].kind == "invalid" and items["cs00ff-0"].invalid is not None
        assert items["cs00ff-1"].kind == "errored" and items["cs00ff-1"].status == 500
        assert items["cs00ff-2"].kind == "ok" and items["cs00ff-2"].reply.answer.score == default_rule(LEAD)["score"]
        assert items["cs00ff-3"].kind == "expired" and "batch_expired" in items["cs00ff-3"].detail
        with pytest.raises(ProviderUnavailable, match="HTTP 409: Cannot cancel a batch with status 'expired'"):
            p.cancel_batch(bid)


def test_openai_validation_fails_a_batch_with_duplicate_custom_ids() -> None:
    with OpenAIBatchEmulator() as oa:
        c = openai.OpenAI(base_url=oa.base_url, api_key=oa.api_key, max_retries=0)
        line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", "messages": []}}
        f = c.files.create(file=("b.jsonl", (json.dumps(line) + "\n") * 2), purpose="batch")
        b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert b.status == "validating"
        b = c.batches.retrieve(b.id)
        assert b.status == "failed" and b.errors.data[0].code == "duplicate_custom_id" and b.errors.data[0].line == 2
        with pytest.raises(openai.BadRequestError, match="purpose 'batch'"):
            c.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")


def test_anthropic_message_batches_custom_ids_results_and_cancel(monkeypatch: pytest.MonkeyPatch) -> None:
    with AnthropicBatchEmulator() as an:
        c = anthropic.Anthropic(base_url=an.base_url, api_key=an.api_key, max_retries=0)
        params = {"model": "m", "max_tokens": 300, "messages": [{"role": "user", "content": PROMPT.user}]}
        with pytest.raises(anthropic.BadRequestError, match=r"custom_id: String should match pattern"):
            c.messages.batches.create(requests=[{"custom_id": "lead 1/ä", "params": params}])
        with pytest.raises(anthropic.BadRequestError, match="Duplicate custom_id"):
            c.messages.batches.create(requests=[{"custom_id": "x", "params": params}] * 2)
        monkeypatch.setenv("K_AN", an.api_key)
        p = AnthropicProvider("claude", AnthropicOptions(type="anthropic", model="m", base_url=an.base_url, api_key_env="K_AN"))
        an.hold()
        bid = p.submit_batch("cs01", [BatchRequest(custom_id("cs01", n), PROMPT) for n in range(3)])
        sent = an.batches[bid].requests[0].body
        assert sent["system"][0]["cache_control"] == {"type": "ephemeral"} and "output_config" in sent
        assert p.poll_batch(bid).counts == {"processing": 3, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        state = p.cancel_batch(bid)
        assert state.status == "canceling" and not state.ended
        state = p.poll_batch(bid)
        assert state.ended and state.counts["canceled"] == 3
        assert {i.kind for i in p.batch_results(bid)} == {"canceled"}
        # after a crash before the id was stored: found again by time and size (never an id the ledger knows)
        since = an.batches[bid].created
        at = datetime.fromtimestamp(since, UTC)
        assert p.find_batch("cs01", at, 3, set()) == bid
        assert p.find_batch("cs01", at, 3, {bid}) is None
        assert p.find_batch("cs01", at, 4, set()) is None
