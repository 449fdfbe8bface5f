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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from .config import FieldsConfig
from .models import CrmLead, Problem, WriteOutcome
from .support import LabelRecord as LabelRecord  # lives beside the one harvesting rule (support.labels)


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
class ConnectorContext:
    """What crmsync hands every connector: the field mapping and where it may keep files."""

    fields: FieldsConfig
    base_dir: Path  # resolve relative paths in options against this (the config file's folder)
    state_dir: Path


@dataclass(frozen=True)
class Bookmark:
    """A position in the changed stream: everything at or before (``modified_at``, ``lead_id``) has been read.

    Ordered by modified time, then id, so ties at one timestamp (a bulk import) are neither skipped nor re-read.
    """

    modified_at: datetime
    lead_id: str = ""

    def before(self, lead: CrmLead) -> bool:
        """True when ``lead`` lies strictly after this bookmark (it has not been read yet)."""
        if lead.modified_at is None:
            return False
        return (lead.modified_at, lead.id) > (self.modified_at, self.lead_id)


class Connector(ABC):
    """One CRM. Four duties: fetch leads in two streams, re-read review decisions, write results back, check.

    Implementations must never change a lead's owner, status or stage: only the mapped output fields.
    crmsync serialises calls with a lock, so a connector is never called from two threads at once, but it may
    be called from more than one thread (fetch pages on one, writes on another) over its lifetime.
    """

    #: the model of this connector's ``[crm.options]`` table
    Options: ClassVar[type[ConnectorOptions]] = ConnectorOptions
    #: the most records one write call takes (Salesforce sObject Collections 200, HubSpot batch update 100)
    write_batch: ClassVar[int] = 200
    #: the most ids one ``read_decisions`` call takes (Salesforce 2,000 with sObject Collections, HubSpot 100)
    read_batch: ClassVar[int] = 2000

    def __init__(self, options: ConnectorOptions, context: ConnectorContext) -> None:
        self.options = options
        self.context = context
        self.fields = context.fields

    @abstractmethod
    def fetch_unscored(self, after_id: str | None, limit: int) -> Iterator[CrmLead]:
        """Yield leads whose mapped score field is empty and whose review decision is empty, in ascending id
        order, starting after ``after_id`` (``None``: from the first), at most ``limit``. Converted / closed
        leads are skipped. Fetch lazily, page by page: crmsync streams what it reads into scoring.

        This stream empties as crmsync writes scores, so every cycle makes progress whatever the backlog; the
        ``after_id`` keyset lets a cycle move past leads that stay unscored (a parked write, no valid answer).
        An eventually consistent search may repeat a lead: crmsync de-duplicates.
        Raises ``RetriableConnectorError`` (busy, unreachable) or ``FatalConnectorError`` (auth, fields).
        """

    @abstractmethod
    def fetch_changed(self, after: Bookmark, until: datetime, limit: int) -> Iterator[CrmLead]:
        """Yield leads modified strictly after ``after`` and at or before ``until``, at most ``limit``, scored or
        not, with ``modified_at`` set. When there are more than ``limit``, yield the earliest ones in (modified
        time, id) order; when all of them fit, any order will do (HubSpot reads them by id, in fewer searches).
        crmsync moves its bookmark to the largest (modified time, id) yielded, so each change (crmsync's own
        writes included) is read once. ``until`` lags the clock so that a search index that is a little behind
        cannot make a change slip past the bookmark.
        """

    def read_decisions(self, ids: Sequence[str]) -> dict[str, str | None]:
        """The review decision each lead holds right now (``None`` when empty), read just before a write, at
        most ``read_batch`` ids per call. Leads that no longer exist are left out. The default reads every
        lead through ``fetch_ids``; override it with the CRM's batch read."""
        return {lead.id: lead.review_decision for lead in self.fetch_ids(ids)}

    @abstractmethod
    def write(self, updates: Sequence[ScoreUpdate]) -> list[WriteOutcome]:
        """Write each update; return exactly one ``WriteOutcome`` per update, in the same order.

        crmsync passes at most ``write_batch`` updates per call. A record the CRM rejects is reported with the
        CRM's message and ``retryable`` set when trying again later may help (a locked row), and never stops
        the others. Where the CRM can update conditionally, a lead whose review decision is filled must not be
        written (report it with ``human=True``). Writing the same values twice must be harmless (idempotent).
        Raises only when the whole call failed (``RetriableConnectorError`` / ``FatalConnectorError``): then
        nothing is assumed written.
        """

    @abstractmethod
    def check(self) -> list[Problem]:
        """Verify credentials, reachability, and that every mapped field exists with a fitting type and
        is readable (inputs) or updateable (outputs). Return the problems found, each with its fix."""

    def output_options(self) -> dict[str, list[str]]:
        """For mapped outputs (and the review decision) that are dropdowns / restricted picklists in the CRM: the
        option values each allows, keyed by output name. `crmsync check` compares them with every value crmsync
        may write, so a missing option is found before the CRM rejects a write. Default: no such fields."""
        return {}

    def can_spend(self) -> bool:
        """Whether the CRM's API budget still allows this cycle's writes, judged from what the connector already
        knows (no API call): crmsync asks before each lead starts scoring, so no LLM money goes to a lead that
        cannot be written. Raise nothing; return False to stop starting new leads."""
        return True

    def fetch_ids(self, ids: Sequence[str]) -> Iterator[CrmLead]:
        """Yield the current state of these leads (for an admin's rescore). The default scans the changed
        stream from the epoch; override it where the CRM can read records by id."""
        wanted = set(ids)
        epoch = Bookmark(datetime(1970, 1, 1, tzinfo=UTC))
        for lead in self.fetch_changed(epoch, datetime.now(UTC), 10_000_000):
            if lead.id in wanted:
                wanted.discard(lead.id)
                yield lead
                if not wanted:
                    return

    def create_fields(self) -> list[str]:
        """Create the missing output fields, if the CRM allows it; return what was created. Idempotent."""
        raise NotImplementedError(f"{type(self).__name__} cannot create fields; create them by hand (see `crmsync check`).")

    def fetch_labels(self) -> Iterator[LabelRecord]:
        """Yield leads with a known outcome (a reviewer's decision, a conversion, a lost lead). Optional. Ask the CRM
        for the records that may carry one, and let ``crmsync.support.harvest_label`` decide each record's label
        (the one rule every connector shares: review, then conversion, then disqualified)."""
        raise NotImplementedError(f"{type(self).__name__} does not harvest labels.")

    def close(self) -> None:  # noqa: B027 - not abstract: a connector holding nothing needs no close()
        """Release sessions and files. Called once, at shutdown."""


def output_values(fields: FieldsConfig, values: dict[str, Any]) -> dict[str, Any]:
    """Map {output name → value} (score, tier, ...) onto CRM field API names, dropping unmapped outputs."""
    mapping = fields.outputs.model_dump()
    return {mapping[name]: value for name, value in values.items() if mapping.get(name)}
