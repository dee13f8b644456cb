"""The embedded local stack: a Kafka-compatible broker, S3 and Redis, all real servers
installed from PyPI wheels, bound to 127.0.0.1. For development, demos and tests only;
production points the same settings at real services."""
