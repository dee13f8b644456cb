"""The stages' partition assignor: sticky, balanced, and telling every member who owns what.

Each member joins with its web URL and the partitions it owned before the rebalance. The
group leader keeps every partition with its previous owner while that owner is under its
fair share, and spreads the rest over the members with the fewest; so a worker joining
takes over only the partitions it gets, and the others keep their state warm. The
assignment sent to every member carries the whole map of owners by URL: the web views
route a key's request to its owner, and gather open windows from every member. A URL that more than
one member advertises (WEB_HOST left at its default on several hosts) is named in the assignment too,
and every member logs it as an error.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

import orjson
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata

VERSION = 0
log = logging.getLogger(__name__)


def balance(partitions: list[int], members: Mapping[str, list[int]]) -> dict[str, list[int]]:
    """Assign `partitions` to `members` (member -> partitions it had), sticky and balanced.

    Members are taken in sorted order, so every leader computes the same answer. Shares
    differ by at most one partition; a member keeps as many of its previous partitions as
    its share allows, in ascending order.
    """
    names = sorted(members)
    if not names:
        return {}
    base, extra = divmod(len(partitions), len(names))
    quota = {name: base + (1 if i < extra else 0) for i, name in enumerate(names)}
    assigned: dict[str, list[int]] = {name: [] for name in names}
    free = set(partitions)
    for name in names:
        for partition in sorted(set(members[name])):
            if partition in free and len(assigned[name]) < quota[name]:
                assigned[name].append(partition)
                free.discard(partition)
    for partition in sorted(free):
        name = min((n for n in names if len(assigned[n]) < quota[n]), key=lambda n: (len(assigned[n]), n))
        assigned[name].append(partition)
    return {name: sorted(parts) for name, parts in assigned.items()}


class StickyAssignor(AbstractPartitionAssignor):
    """Used as an instance (aiokafka calls these methods on whatever it is given)."""

    name = "pipeline-sticky"
    version = VERSION

    def __init__(self, url: str, owned: Callable[[], Iterable[int]]) -> None:
        self.url = url
        self._owned = owned
        self.owners: dict[str, list[int]] = {}  # web URL -> partitions, as of the last assignment
        self.duplicates: list[str] = []  # web URLs more than one member advertised, as of the last assignment

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:  # type: ignore[override]
        data = orjson.dumps({"url": self.url, "owned": sorted(self._owned())})
        return ConsumerProtocolMemberMetadata(self.version, sorted(topics), data)

    def assign(self, cluster: ClusterMetadata,  # type: ignore[override]
               members: Mapping[str, ConsumerProtocolMemberMetadata]) -> dict[str, ConsumerProtocolMemberAssignment]:
        topics = sorted({topic for meta in members.values() for topic in meta.subscription})
        if len(topics) != 1:
            raise ValueError(f"a stage consumes exactly one topic, the group subscribes {topics}")
        topic = topics[0]
        partitions = sorted(cluster.partitions_for_topic(topic) or ())
        info = {member_id: _member_info(meta.user_data) for member_id, meta in members.items()}
        shares = balance(partitions, {member_id: owned for member_id, (_, owned) in info.items()})
        owners: dict[str, list[int]] = {}
        advertised = Counter(url for url, _ in info.values())
        for member_id, parts in shares.items():  # two members of one URL: their partitions under it, both
            owners[info[member_id][0]] = sorted(owners.get(info[member_id][0], []) + parts)
        duplicates = sorted(url for url, members_of_url in advertised.items() if url and members_of_url > 1)
        user_data = orjson.dumps({"owners": owners, "duplicates": duplicates})
        return {member_id: ConsumerProtocolMemberAssignment(self.version, [(topic, parts)], user_data)
                for member_id, parts in shares.items()}

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:  # type: ignore[override]
        data = orjson.loads(assignment.user_data or b"{}")
        self.owners = {str(url): [int(p) for p in parts] for url, parts in data.get("owners", {}).items()}
        self.duplicates = [str(url) for url in data.get("duplicates", [])]
        if self.duplicates:
            # Requests routed to such a URL reach one of its workers, or the asker itself: the API answers 404 or
            # incomplete lists for the keys the others own. Each worker needs a WEB_HOST the others reach it by.
            log.error("more than one worker advertises the web URL %s (WEB_HOST:WEB_PORT): give each worker a "
                      "WEB_HOST that names it to the others (its host name or address), or requests routed "
                      "between them reach the wrong one", ", ".join(self.duplicates))


def _member_info(user_data: bytes | None) -> tuple[str, list[int]]:
    try:
        data = orjson.loads(user_data or b"{}")
        return str(data.get("url", "")), [int(p) for p in data.get("owned", [])]
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return "", []  # a member of another version: it gets partitions, but no stickiness or routing
