"""The stages' state and the pure rules over it (the design card's tables: per-partition state with
its changelog, not faust tables).

``windows``    window specs, window starts and the close rule.
``watermark``  event time per partition; the watermark, low watermark, frontier and low frontier.
``partials``   stage 1's open partial aggregates and the fold (the hot path).
``totals``     stage 2's totals, the merge and the combine.
``packed``     many window keys in few changelog records (packs) and their bookkeeping.
``state``      each stage's state of one partition, built from its changelog's items.
``store``      one partition's durable state: a changelog partition, materialized in RocksDB.
``changelog``  reading partitions to their end, and a changelog into its items: the one reader.
"""
