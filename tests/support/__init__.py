"""Starting the real servers our tests and benchmarks need: the Tansu Kafka-protocol broker,
a fresh PostgreSQL database, a Redis namespace, and a local OpenAI-compatible model server for the
`llm` CJ judge (`model_server`). Never a mock of our own infrastructure."""
