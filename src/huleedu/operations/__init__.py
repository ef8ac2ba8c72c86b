"""Operating the system for months: retention of the tables that only grow, gauges read from the
database for alerts, and the operators' commands (`huleedu ops ...`). See docs/operations.md."""
