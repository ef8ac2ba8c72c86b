"""Essay Lifecycle Service (ELS): each essay's state, fed by thin events only. It stores ids,
states, phase statuses, event ids and timestamps, and nothing that could hold a score, a grade,
a metric or a text (invariant 1)."""
