"""The wire: envelope, event models, topics, enums and the structured error. Pure, no I/O."""
