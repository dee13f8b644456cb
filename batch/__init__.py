"""The batch layer: hourly and daily rollups recomputed from the raw archive in the lake.

`faust -A app batch` (commands/batch.py) runs `job.run_batch`. Each module has one job:
periods (hours, days, --from/--to), sealing (which hours may be computed), manifest (what
changed since a period was processed), inputs (reading raw files, skipping foreign ones),
rollup (the engine), stage1 (reading stage 1's watermarks and positions from Kafka).
Nothing runs at import.
"""
