"""CJ Assessment Service: comparative judgement of a batch, Bradley-Terry scores, grade projection.

The domain (pairing, scoring, grading, judges, the `assess` engine) does no I/O of its own beyond the
judge it is given; the consumer and its handler map its outcome onto the thin and rich events.
"""
