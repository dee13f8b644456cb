"""The stores the pipeline writes to and reads from, under one failure policy (the formats are formats/).

``policy``       what is transient, what is retried and for how long, what stops the worker.
``outputs``      the worker's facade: every store call in a thread, writes retried by the policy.
``lake``         the S3 lake's writer and reader (one call per object).
``redis_store``  the Redis writer (one script call per batch of rows) and readers.
``archive``      the raw archive of one input partition: files cut by size, age and hour, written in order.
``rollups``      reading the batch layer's rollups back for the web API.

Writers use blocking clients and run in a thread executor; clients are created by ``open()``
through an injected factory, never at import.
"""
