"""Feature store: definitions, offline and online stores, point-in-time retrieval."""
