"""Spellcheck: the second assessment phase. Per essay it counts and corrects misspellings, stores
the corrected text, and dual-publishes a thin outcome (ELS) and a rich result (RAS)."""
