"""The spec language as written: models, constrained types and validation."""
