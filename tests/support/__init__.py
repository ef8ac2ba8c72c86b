"""Starting the real servers our tests and benchmarks need: the Tansu Kafka-protocol broker,
a fresh PostgreSQL database, a Redis namespace. Never a mock of our own infrastructure."""
