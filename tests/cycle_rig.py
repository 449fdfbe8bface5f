"""One crmsync setup over a connector, wired as `crmsync run` wires it: real scorer, real ledger, real cycle."""

from __future__ import annotations

from crmsync.app import build_scorer
from crmsync.config import Config
from crmsync.connector import Connector
from crmsync.cycle import Cycle, CycleReport
from crmsync.state import Ledger


class CycleRig:
    def __init__(self, config: Config, connector: Connector) -> None:
        self.config = config
        self.scorer = build_scorer(config)
        self.connector = connector
        self.ledger = Ledger(config.state_dir / "ledger.sqlite", config.crm.type)
        self.cycle = Cycle(config, connector, self.ledger, self.scorer)

    def run(self) -> CycleReport:
        return self.cycle.run()

    def close(self) -> None:
        self.connector.close()
        self.ledger.close()
        self.scorer.close()
