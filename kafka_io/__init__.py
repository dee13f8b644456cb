"""The pipeline's Kafka I/O below the stages, shared by the worker, the batch job and the commands.

``clients``  client options from settings (one home for TLS and SASL) and the worker's one producer.
``topics``   every topic's name and layout; creation, and refusal of a wrong partition count.
``tail``     reading partitions to their real end (restores, the tails of output topics).
"""
