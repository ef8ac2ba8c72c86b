"""Event bus port and adapters (in-process, Kafka), consumer dispatch, transactional outbox and relay,
idempotency."""
