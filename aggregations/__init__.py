"""Aggregations declared over any JSON event (the AGGREGATIONS spec file).

``spec``   the spec: the event's time field, and per aggregation its key, measures, filter, windows
           and outputs; parsed and validated with errors naming the aggregation and the field.
``judge``  one event against a spec: its time, and per aggregation its key and measures, or why it is
           a dead letter for it.

Not wired into the stages yet: the worker still runs the article's job (NOTES.md, "Your events, your
keys").
"""
