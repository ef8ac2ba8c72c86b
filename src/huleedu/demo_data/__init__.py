"""The bundled sample batch of `huleedu demo`: 24 short student essays and 6 graded anchors on one
prompt, written for this project (fictional students, original text, deliberately uneven in quality
and spelling so that ranks, grades and spelling metrics have something to show)."""
