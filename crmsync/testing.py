"""A contract test suite every connector runs, built-in or third-party.

Subclass ``ConnectorContract`` in a test module and provide the ``backend`` fixture: an object that
satisfies ``ContractBackend`` (crmsync/contract_backend.py) against your CRM, or a local emulator of it: it
builds your connector and reads and changes records directly, so the suite can see what the connector did.
A hook your CRM cannot serve raises ``Unsupported("why")``; only the one test needing it is skipped, with that
reason. pytest then runs every contract test against it::

    class TestPipedrive(ConnectorContract):
        @pytest.fixture
        def backend(self, pipedrive_emulator):
            return PipedriveBackend(pipedrive_emulator)
"""

from __future__ import annotations

import pytest

from .contract_admin import AdminContract
from .contract_backend import CONTRACT_INPUTS, ContractBackend, Unsupported
from .contract_streams import StreamContract
from .contract_writes import WriteContract
from .testing_providers import ProviderContract, contract_prompt

__all__ = ["CONTRACT_INPUTS", "ConnectorContract", "ContractBackend", "ProviderContract", "Unsupported", "contract_prompt"]


class ConnectorContract(StreamContract, WriteContract, AdminContract):
    """The tests (in ``crmsync.contract_streams``, ``contract_writes`` and ``contract_admin``). Each asserts
    behaviour crmsync relies on, and each fails for a connector that gets it wrong (tests/test_contract_catches.py)."""

    @pytest.fixture
    def backend(self) -> ContractBackend:  # pragma: no cover - provided by subclasses
        raise NotImplementedError
