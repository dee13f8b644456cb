"""The batch layer: hourly and daily rollups recomputed from the raw archive in the lake, and the
speed layer's windows restated with late data.

`faust -A app batch` (commands/batch.py) runs `job.run_batch`. Each module has one job:
``periods``    hours, days and the times --from/--to accept;
``sealing``    which hours may be computed (the rule), from what stage 1 made durable;
``stage1``     reading stage 1's watermarks and positions from Kafka;
``stage2``     reading what stage 2 has exported, from its changelog;
``manifest``   what changed since a period was processed;
``inputs``     reading raw files, skipping foreign ones;
``judging``    a spec's events in the raw archive, judged again per aggregation;
``rollup``     the engine of the rollups (DuckDB), the article's and a spec's aggregations';
``restate``    the pure restatement: which hours, the fold of a window from raw events, the comparison;
``restating``  one run's restatement of the windows of those hours, in S3 and Redis;
``spec_restating`` the same for each aggregation of a spec;
``job``        one run: periods, then restatement; ``report`` what it reports;
``progress``   the run's progress line;
``spark_job``  the rollups on Apache Spark (its own entry point, `make test-spark`).
Nothing runs at import.
"""
