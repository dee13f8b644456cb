"""What an operator runs besides the worker.

``batch``     `faust -A app batch`: the batch layer's run (rollups, restatement, backfill).
``produce``   `faust -A app produce`: the demo event generator, to a topic.
``loadgen``   the demo events (users, event types, malformed and late ones) at a rate.
``workers``   `python -m commands.workers --count N`: N worker processes on one host, restarted.
"""
