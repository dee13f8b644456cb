"""Stream processors: one module per stream, each with a `register(app)`."""
