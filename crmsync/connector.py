"""The connector contract: what every CRM connector (built-in or third-party) implements.

A connector is registered under the entry-point group ``crmsync.connectors``; the entry-point name is the
``[crm] type`` users write in the config. A third-party package (say ``crmsync-pipedrive``) declares::

    [project.entry-points."crmsync.connectors"]
    pipedrive = "crmsync_pipedrive:PipedriveConnector"

and runs ``crmsync.testing.ConnectorContract`` against its own connector.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from .config import FieldsConfig
from .models import CrmLead, Problem, WriteOutcome


class ConnectorOptions(BaseModel):
    """Base for a connector's own ``[crm.options]``; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class ScoreUpdate:
    """Values to write to one record, keyed by CRM field API name.

    Values are Python ``int``, ``float``, ``bool``, ``str``, ``datetime`` (UTC) or ``None`` (clear the field);
    the connector converts them to what its CRM expects (HubSpot wants strings, Salesforce JSON types).
    """

    lead_id: str
    values: dict[str, Any]


@dataclass(frozen=True)
class LabelRecord:
    """A known outcome for a lead, harvested for evaluation: a reviewer's decision or a conversion."""

    lead_id: str
    inputs: dict[str, Any]
    outcome: Literal["qualified", "unqualified"]
    source: Literal["review", "conversion"]
    decided_at: datetime | None


@dataclass(frozen=True)
class ConnectorContext:
    """What crmsync hands every connector: the field mapping and where it may keep files."""

    fields: FieldsConfig
    base_dir: Path  # resolve relative paths in options against this (the config file's folder)
    state_dir: Path


class Connector(ABC):
    """One CRM. Three duties: fetch the leads that need a look, write results back, check the setup.

    Implementations must be safe to call from one thread at a time (crmsync never calls a connector
    concurrently) and must never change a lead's owner, status or stage: only the mapped output fields.
    """

    #: the model of this connector's ``[crm.options]`` table
    Options: ClassVar[type[ConnectorOptions]] = ConnectorOptions

    def __init__(self, options: ConnectorOptions, context: ConnectorContext) -> None:
        self.options = options
        self.context = context
        self.fields = context.fields

    @abstractmethod
    def fetch(self, since: datetime | None, limit: int) -> Iterator[CrmLead]:
        """Yield leads that need a look, oldest first, at most ``limit``.

        Must yield every lead whose mapped score field is empty. When ``since`` is given, must also yield
        leads modified after it (so changed inputs can be rescored; crmsync compares a fingerprint of the
        inputs, so a lead modified only by crmsync's own write is not rescored). ``CrmLead.inputs`` holds
        the mapped input fields only, keyed by the scorer's input names (``fields.inputs`` keys), with
        values as the CRM returned them. ``review_decision`` is the configured decision field's value.
        Converted / closed leads are skipped. The same lead may be yielded twice (eventually consistent
        search): crmsync de-duplicates.
        Raises ``RetriableConnectorError`` (busy, unreachable) or ``FatalConnectorError`` (auth, fields).
        """

    @abstractmethod
    def write(self, updates: Sequence[ScoreUpdate]) -> list[WriteOutcome]:
        """Write each update; return exactly one ``WriteOutcome`` per update, in the same order.

        Batches as the CRM allows. A record the CRM rejects is reported with the CRM's message and
        ``retryable`` set when trying again later may help (a locked row), and never stops the others.
        Writing the same values twice must be harmless (idempotent). Raises only when the whole call
        failed (``RetriableConnectorError`` / ``FatalConnectorError``): then nothing is assumed written.
        """

    @abstractmethod
    def check(self) -> list[Problem]:
        """Verify credentials, reachability, and that every mapped field exists with a fitting type and
        is readable (inputs) or updateable (outputs). Return the problems found, each with its fix."""

    def fetch_ids(self, ids: Sequence[str]) -> Iterator[CrmLead]:
        """Yield the current state of these leads (for an admin's rescore). The default scans
        ``fetch(since=epoch)``; override it where the CRM can read records by id."""
        wanted = set(ids)
        for lead in self.fetch(datetime(1970, 1, 1, tzinfo=timezone.utc), 10_000_000):
            if lead.id in wanted:
                wanted.discard(lead.id)
                yield lead
                if not wanted:
                    return

    def create_fields(self) -> list[str]:
        """Create the missing output fields, if the CRM allows it; return what was created. Idempotent."""
        raise NotImplementedError(f"{type(self).__name__} cannot create fields; create them by hand (see `crmsync check`).")

    def fetch_labels(self) -> Iterator[LabelRecord]:
        """Yield leads with a known outcome (a reviewer's decision, a conversion). Optional."""
        raise NotImplementedError(f"{type(self).__name__} does not harvest labels.")

    def close(self) -> None:
        """Release sessions and files. Called once, at shutdown."""


def output_values(fields: FieldsConfig, values: dict[str, Any]) -> dict[str, Any]:
    """Map {output name → value} (score, tier, ...) onto CRM field API names, dropping unmapped outputs."""
    mapping = fields.outputs.model_dump()
    return {mapping[name]: value for name, value in values.items() if mapping.get(name)}
