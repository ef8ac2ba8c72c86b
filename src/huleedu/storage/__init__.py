"""Database access shared by every service: engine and sessions, unit of work, schema and migrations."""
