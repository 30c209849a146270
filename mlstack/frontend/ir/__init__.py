"""The resolved IR and the passes that build it."""
