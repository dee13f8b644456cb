"""Pure logic for event-time windowed aggregation tables."""
