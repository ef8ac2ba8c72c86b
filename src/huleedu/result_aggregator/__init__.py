"""Result Aggregator Service (RAS): the source of truth for assessment results and the only
service that decides a batch is complete."""
