"""Where the patched fetch loop expects a partition's next message (faust_patches.expected_offset)."""

from __future__ import annotations

import pytest

from faust_patches import expected_offset


@pytest.mark.parametrize(("read_offset", "last_processed", "committed", "expected"), [
    (None, None, None, 0),  # a new group's first message: the partition starts at 0
    (0, None, None, 0),  # sought to 0 (faust keeps 0 after seeking to a committed 0)
    (900, None, 900, 900),  # restarted: sought to the committed offset, nothing read yet
    (None, None, 900, 900),  # committed known, read offset not set
    (41, 41, 900, 42),  # steady state: the message after the last one handed on
    (120, 41, 900, 120),  # sought elsewhere since (a re-read): the seek's target
    (None, 41, 0, 0),  # sought back to 0, which faust records as None
])
def test_expected_offset(read_offset: int | None, last_processed: int | None, committed: int | None,
                         expected: int) -> None:
    assert expected_offset(read_offset, last_processed, committed) == expected
