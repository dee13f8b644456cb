"""The two stages of the worker and the runtime that drives them.

``ingest``       stage 1, per input partition: validate, dead-letter, archive, pre-aggregate, frontier.
``export``       stage 2, per partials partition: merge, close windows, export once, judge alert rules.
``watermarks``   every input partition's published watermark, on every worker (the low watermark).
``runner``       one consumer-group member per stage: restore on assignment, poll, process, tick, revoke.
``group``        the stages' sticky assignor, which also tells every member who owns what.
``pipeline``     the worker's clients and both stages, started and stopped in order.
``monitor``      readiness, lag and state size sampled by timers; the batch job's status; the start summary.
``diagnostics``  `kill -USR1` logs each stage's positions and the stack of every asyncio task.
``faust_compat`` where the worker leans on faust-streaming (its boot, CLI flags, version pin).

(The design card's name: these are the pipeline's stream processors. They are not faust agents:
the stages own their Kafka path on aiokafka, NOTES.md says why.)
"""
