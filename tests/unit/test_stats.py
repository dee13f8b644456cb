"""ops/stats.py: the frontier a worker reports is its partitions' lowest, and none until each has one."""

from ops.stats import PipelineStats


def test_the_frontier_is_none_until_every_partition_announced_one() -> None:
    stats = PipelineStats()
    assert stats.frontier_over([]) is None
    stats.frontiers_ms.update({0: 5_000, 1: 7_000})
    assert stats.frontier_over([0, 1]) == 5_000
    # Partition 3 has no frontier yet: it judges nothing late, so the worker has no frontier to report.
    assert stats.frontier_over([0, 1, 3]) is None
    stats.frontiers_ms[3] = 9_000
    assert stats.frontier_over([0, 1, 3]) == 5_000
    assert stats.frontier_over([3]) == 9_000
