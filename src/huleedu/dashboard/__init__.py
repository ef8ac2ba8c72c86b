"""The teacher dashboard: a static web page (no build step) and the teacher-facing read routes it
uses, which ask RAS's query API over HTTP and return only the caller's own batches."""
