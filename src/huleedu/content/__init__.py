"""The content store: essay texts stored once, by content hash, immutable, referenced by
`text_storage_id` in every event. Hosted by the intake unit (`huleedu serve intake`)."""
