"""Batch intake: the teacher-facing submission of essays, which stores the texts in the content
store and announces the batch and its phase requests through the outbox."""
