"""Every byte layout the pipeline writes or reads, each declared once with its version and the earlier
generations its reader still takes; importing nothing from the state that uses them.

Kafka:
``events``        the input event (JSON): decoding and validity, the dead-letter reasons.
``partials``      the partials topic: window keys and their routing, partials and frontier messages.
``side_outputs``  the dead-letter and late topics' records (headers).
``alerts``        the alerts topic's records (the same JSON in Redis and the API), and a rule's state.
``watermarks``    the watermarks topic's records.
``state``         both stages' changelogs: every key and value.

S3 and Redis:
``lake``          the lake's object names and layout.
``rows``          a closed window's row: Parquet, JSON, Redis hash, API.
``raw``           the raw archive's Parquet files.
``batch``         the batch layer's rollups, manifests and status hash.
``redis``         every Redis key.
``parquet``       the Parquet writer's pinned options and a schema-checking reader.

And two helpers of the formats: ``keys`` (reversible encoding of untrusted strings into S3 path
segments and Redis key parts) and ``chunks`` (a list cut into bodies under a byte limit).
"""
