"""Reading through HubSpot's CRM search: keyset paging by hs_object_id, the filter groups for "changed after the
bookmark", and the by-time read that keeps ties (one millisecond, a bulk import) neither skipped nor re-read.

Search answers raw records; the connector turns them into leads. ``is_open`` (not in a skipped lifecycle
stage) is the connector's test, applied here only where it decides how many records a read may still take.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Generator, Iterator
from datetime import UTC, datetime
from typing import Any

from crmsync import Bookmark

from .client import HubSpotClient
from .config import HubSpotOptions

SEARCH_PAGE = 200  # HubSpot's maximum search page
Groups = list[list[dict[str, Any]]]  # OR of ANDs, as search's filterGroups


def parse_time(value: Any) -> datetime | None:
    """A HubSpot timestamp (ISO 8601, or epoch milliseconds as text) as an aware datetime."""
    if isinstance(value, datetime):
        return value
    if not value:
        return None
    text = str(value)
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def epoch_ms(when: datetime) -> int:
    return round(when.timestamp() * 1000)


class Search:
    """Search queries for one connector (its client and options)."""

    def __init__(self, client: HubSpotClient, options: HubSpotOptions) -> None:
        self.client = client
        self.options = options

    def stage_variants(self) -> Groups:
        """Leads not in a skipped stage. Two groups, so the answer holds whether or not HubSpot's NOT_IN
        matches records without the property."""
        skip = self.options.skip_lifecycle_stages
        if not skip:
            return [[]]
        stage = self.options.stage_property
        return [
            [{"propertyName": stage, "operator": "NOT_HAS_PROPERTY"}],
            [{"propertyName": stage, "operator": "NOT_IN", "values": list(skip)}],
        ]

    def records(self, groups: Groups, properties: list[str], page_size: Callable[[], int], after_id: int = 0) -> Iterator[Any]:
        """Every match once, in hs_object_id order (see ``counted``)."""
        for record, _ in self.counted(groups, properties, page_size, after_id):
            yield record

    def counted(
        self, groups: Groups, properties: list[str], page_size: Callable[[], int], after_id: int = 0
    ) -> Generator[tuple[Any, int | None], None, None]:
        """Every match once, in hs_object_id order, each with the first page's ``total``. Each page is a fresh query
        with ``hs_object_id GT`` the last id seen (keyset paging), so search's 10,000-result cap never applies."""
        last_id, total, first = after_id, None, True
        while True:
            keyset = {"propertyName": "hs_object_id", "operator": "GT", "value": str(last_id)}
            body = {
                "filterGroups": [{"filters": [*g, keyset]} for g in groups],
                "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
                "properties": properties,
                "limit": max(1, min(SEARCH_PAGE, page_size())),
            }
            page = self.client.search(body)
            if first:
                total, first = getattr(page, "total", None), False
            results = page.results or []
            for record in results:
                last_id = max(last_id, int(record.id))
                yield record, total
            if not results or page.paging is None or page.paging.next is None:
                return

    def after(self, at: int, last_id: int, end: int, variants: Groups) -> Groups:
        """Filter groups for "after the bookmark (at ms, last id), up to end ms": the rest of the bookmark's own
        millisecond by id, OR any later millisecond (per lifecycle-stage variant)."""
        prop = self.options.modified_property
        return [
            [
                {"propertyName": prop, "operator": "EQ", "value": str(at)},
                {"propertyName": "hs_object_id", "operator": "GT", "value": str(last_id)},
                *v,
            ]
            for v in variants
        ] + [
            [{"propertyName": prop, "operator": "GT", "value": str(at)}, {"propertyName": prop, "operator": "LTE", "value": str(end)}, *v]
            for v in variants
        ]

    def modified_ms(self, record: Any) -> int:
        when = parse_time((record.properties or {}).get(self.options.modified_property)) or getattr(record, "updated_at", None)
        return epoch_ms(when) if when else 0

    def changed(self, after: Bookmark, until: datetime, limit: int, properties: list[str], is_open: Callable[[Any], bool]) -> Iterator[Any]:
        """The open records changed after the bookmark, up to ``until``. When they all fit in ``limit`` (search's
        ``total`` says so) they are read in hs_object_id order, keyset-paged: ⌈changes/200⌉ searches. Otherwise by
        time (see ``_by_time``), so that a partial read leaves a bookmark nothing slips past."""
        at, last_id = epoch_ms(after.modified_at), int(after.lead_id) if after.lead_id.isdigit() else 0
        groups = self.after(at, last_id, epoch_ms(until), self.stage_variants())
        pages = self.counted(groups, properties, lambda: min(SEARCH_PAGE, limit))
        first = next(pages, None)
        if first is None:
            return  # nothing changed
        if first[1] is None or first[1] > limit:  # more than this cycle takes: read by time instead
            pages.close()
            yield from self._by_time(after, until, limit, properties, is_open)
            return
        for record, _ in itertools.chain([first], pages):
            if is_open(record):
                yield record

    def _by_time(self, after: Bookmark, until: datetime, limit: int, props: list[str], is_open: Callable[[Any], bool]) -> Iterator[Any]:
        """Search sorts by one property only, so ties (records modified in one millisecond, a bulk import) are
        handled here: each query asks for the rest of the bookmark's millisecond (by id) OR later ones, a page is
        ordered by (time, id) locally, and a full page's trailing millisecond is left for the next query, which
        starts after the last complete millisecond. A page that is one millisecond only is read by id instead."""
        prop, left = self.options.modified_property, limit
        at, last_id = epoch_ms(after.modified_at), int(after.lead_id) if after.lead_id.isdigit() else 0
        end = epoch_ms(until)
        variants = self.stage_variants()
        while left > 0:
            size = min(SEARCH_PAGE, left)
            groups = self.after(at, last_id, end, variants)
            body = {
                "filterGroups": [{"filters": g} for g in groups],
                "sorts": [{"propertyName": prop, "direction": "ASCENDING"}],
                "properties": props,
                "limit": size,
            }
            records = sorted(self.client.search(body).results or [], key=lambda r: (self.modified_ms(r), int(r.id)))
            if not records:
                return
            full, tail = len(records) >= size, self.modified_ms(records[-1])
            if full and self.modified_ms(records[0]) == tail:  # one millisecond fills the page: read it by id (keyset)
                ties = [[{"propertyName": prop, "operator": "EQ", "value": str(tail)}, *v] for v in variants]
                moved = False
                for record in self.records(ties, props, lambda: left, last_id if tail == at else 0):  # noqa: B023 (read per page)
                    at, last_id, moved = tail, int(record.id), True
                    if is_open(record):
                        left -= 1
                        yield record
                        if left <= 0:
                            return
                if not moved:
                    return  # the index changed under us: the next cycle starts from the bookmark again
                continue
            for record in records:
                if full and self.modified_ms(record) == tail:
                    break  # this millisecond may go on past the page: the next query starts before it
                at, last_id = self.modified_ms(record), int(record.id)
                if is_open(record):
                    left -= 1
                    yield record
                    if left <= 0:
                        return
            if not full:
                return
