"""The connector contract suite catches each way a connector can break it (issue 13).

``crmsync.testing.ConnectorContract`` runs, through pytest's own ``pytester``, against toy in-memory connectors
(tests/contract_toys.py): the correct one passes every test, and each broken one fails the test written for its
fault. A broken toy that passes would mean the suite no longer guards that part of the contract.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from crmsync.testing import ConnectorContract
from tests import contract_toys

pytest_plugins = ["pytester"]

SUITE = """
import pytest
from crmsync.testing import ConnectorContract
from tests import contract_toys

class TestToy(ConnectorContract):
    @pytest.fixture
    def backend(self):
        return contract_toys.ToyBackend(contract_toys.{name})
"""


def _run(pytester: pytest.Pytester, name: str) -> dict[str, str]:
    """Run the whole contract against one toy: test name → outcome."""
    pytester.syspathinsert(Path(__file__).resolve().parents[1])  # the repository: `tests.contract_toys`
    pytester.makepyfile(**{f"test_toy_{name.lower()}": SUITE.format(name=name)})
    recorder = pytester.inline_run("-p", "no:cacheprovider")
    outcomes: dict[str, str] = {}
    for report in recorder.getreports("pytest_runtest_logreport"):
        test = report.nodeid.rsplit("::", 1)[-1]
        if report.failed:
            outcomes[test] = "failed"
        elif report.skipped and outcomes.get(test) != "failed":
            outcomes[test] = "skipped"
        elif report.when == "call":
            outcomes.setdefault(test, "passed")
    return outcomes


def _contract_tests() -> set[str]:
    return {name for name in dir(ConnectorContract) if name.startswith("test_")}


def test_a_correct_connector_passes_every_contract_test(pytester: pytest.Pytester) -> None:
    outcomes = _run(pytester, "ToyConnector")
    assert set(outcomes) == _contract_tests()
    assert {t: o for t, o in outcomes.items() if o != "passed"} == {}, "the correct toy keeps the whole contract"


@pytest.mark.parametrize("broken", list(contract_toys.BROKEN), ids=lambda cls: cls.__name__)
def test_each_broken_connector_fails_its_contract_test(pytester: pytest.Pytester, broken: type) -> None:
    outcomes = _run(pytester, broken.__name__)
    failed = {t for t, o in outcomes.items() if o == "failed"}
    expected = contract_toys.BROKEN[broken]
    assert failed == expected, f"{broken.__name__} is broken in one way: it must fail {sorted(expected)}, it failed {sorted(failed)}"
    assert set(outcomes) == _contract_tests() and "skipped" not in outcomes.values(), "every other contract test ran and passed"
