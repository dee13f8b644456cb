"""`make bench-peers`: the same windowed job in Bytewax and Quix Streams, interleaved with this project."""
