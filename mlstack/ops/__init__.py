"""Operations: bring a compiled system up on its target (local processes, or terraform for
cluster targets) and run its lifecycle. Library code: never prints."""
