"""Email to teachers: the worker that drains `email_queue`, its templates and its two mailers (SMTP,
or `.eml` files in embedded mode)."""
