"""Diagnostics: the Diagnostic record, the stable codes, the tool's errors and the output
formats (text, JSON, SARIF, GitHub annotations). The lowest layer: imports nothing else of
mlstack."""
