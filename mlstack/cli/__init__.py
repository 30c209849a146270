"""The command line: verbs, argument parsing, and every line mlstack prints."""
