"""Every byte layout the pipeline writes or reads: declared once, importing nothing from state.

``events``   the input event (JSON): decoding and validity, the dead-letter reasons.
``keys``     reversible encoding of untrusted strings into S3 path segments and Redis key parts.
``chunks``   cutting a list into bodies under a byte limit (partials messages, packs).
``rows``     a closed window's row, the raw archive's and the batch layer's files, in Parquet, JSON
             and Redis hashes.
"""
