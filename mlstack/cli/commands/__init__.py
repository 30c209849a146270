"""CLI verbs: one module each, with `register(subparsers)` and `run(args) -> int`.

A verb parses its options, calls one library function and renders the result. Heavy
imports happen inside `run`, so `mlstack --help` and `mlstack lint` start fast. The options
every verb shares (-C, the spec argument, --format) come from mlstack.cli.arguments.
"""

VERBS = ("init", "lint", "schema", "compile", "plan", "graph", "docs", "deploy", "status", "down",
         "rollback", "run", "logs", "repair", "completion")
