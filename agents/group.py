"""The stages' partition assignor: sticky, balanced, and telling every member who owns what.

Each member joins with its web URL and the partitions it owned before the rebalance. The
group leader keeps every partition with its previous owner while that owner is under its
fair share, and spreads the rest over the members with the fewest; so a worker joining
takes over only the partitions it gets, and the others keep their state warm. The
assignment sent to every member carries the whole map of owners by URL: the web views
route a key's request to its owner, and gather open windows from every member.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import orjson
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata

VERSION = 0


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
        owners = {info[member_id][0]: parts for member_id, parts in shares.items()}
        user_data = orjson.dumps({"owners": owners})
        return {member_id: ConsumerProtocolMemberAssignment(self.version, [(topic, parts)], user_data)
                for member_id, parts in shares.items()}

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:  # type: ignore[override]
        owners = orjson.loads(assignment.user_data or b"{}").get("owners", {})
        self.owners = {str(url): [int(p) for p in parts] for url, parts in owners.items()}


def _member_info(user_data: bytes | None) -> tuple[str, list[int]]:
    try:
        data = orjson.loads(user_data or b"{}")
        return str(data.get("url", "")), [int(p) for p in data.get("owned", [])]
    except (orjson.JSONDecodeError, TypeError, ValueError):
        return "", []  # a member of another version: it gets partitions, but no stickiness or routing
