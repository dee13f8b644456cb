"""What changed since a period was processed: the listing of its raw folders against its manifest;
and reading a manifest back."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TypeVar

from formats.batch import Manifest

if TYPE_CHECKING:
    from batch.report import BatchLake

__all__ = ["read_manifest", "reason_to_process"]

T = TypeVar("T")


def read_manifest(lake: BatchLake, key: str, decode: Callable[[bytes], T], say: Callable[[str], None],
                  then: str) -> T | None:
    """The manifest at `key`, or None with a warning (ending in `then`) if it cannot be read as one."""
    try:
        return decode(lake.get_bytes(key))
    except ValueError as exc:
        say(f"warning: s3://{lake.bucket}/{key} is not a readable manifest ({exc}): {then}")
        return None


def reason_to_process(manifest: Manifest | None, listing: Mapping[str, str], *, output_present: bool) -> str | None:
    """Why the period must be (re)computed, or None when its outputs are up to date.

    `listing` is key -> ETag of every object now in the period's raw folders. Equal listings
    mean equal inputs: raw files are never rewritten, and any other change of an object changes
    its ETag."""
    if manifest is None:
        return "not processed yet"
    if manifest.output is not None and not output_present:
        return f"its output {manifest.output} is missing"
    if dict(manifest.inputs) == dict(listing):
        return None
    added = sum(1 for key in listing if key not in manifest.inputs)
    removed = sum(1 for key in manifest.inputs if key not in listing)
    changed = sum(1 for key, etag in listing.items() if key in manifest.inputs and manifest.inputs[key] != etag)
    parts = [f"{n} {what}" for n, what in ((added, "new"), (changed, "changed"), (removed, "removed")) if n]
    return "inputs changed: " + ", ".join(parts) + " object(s)"
