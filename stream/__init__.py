"""The pipeline's own Kafka runtime: consumer groups, stage runners, topics and the producer.

faust-streaming 0.15.3 runs the worker, its web server, CLI and timers; the read and write
paths that exactly-once rests on are owned here, on aiokafka directly (NOTES.md says why):

``clients``   client options and the worker's producer (acks=all, ordered per partition).
``topics``    creates the topics the pipeline needs and refuses a partition-count mismatch.
``group``     the sticky assignor that also tells every member who owns what (web routing).
``runner``    a stage runner: group membership, restore on assignment, poll, process, revoke.
``tail``      reading a partition to its real end (restores, tails of output topics).
"""
