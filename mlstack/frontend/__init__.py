"""The front end, what `mlstack lint` runs: load (source map) -> spec models (as written) ->
resolve (the IR, as resolved) -> named checks. Imports only `diagnostics`; never a runtime
library."""
