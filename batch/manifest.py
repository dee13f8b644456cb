"""What changed since a period was processed: the listing of its raw folders against its manifest."""

from __future__ import annotations

from collections.abc import Mapping

from formats.batch import Manifest

__all__ = ["reason_to_process"]


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
