"""Sinks for closed windows and raw events: destinations and the retry policy (the formats are in
formats/).

``lake``         S3 object names and the S3 writer (one ``put_object`` per call).
``redis_store``  Redis key layout, writer (one pipeline per call) and readers.
``retry``        backoff delays and ``retry_forever`` for transient failures.
``errors``       typed errors shared by the writers.

Writers use blocking clients and are meant to run in a thread executor; clients are
created by ``open()`` through an injected factory, never at import.
"""
