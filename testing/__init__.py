"""What the tests and the benchmarks share (not part of the product, outside its layering contract).

``fakes``      in-memory stand-ins for what the stages use: a broker, a state store over its
               changelog, the lake and Redis, the watermark board and a clock.
``reference``  plain-Python references the tests compare exact outputs with.
"""
