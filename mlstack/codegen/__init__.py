"""Code generation: IR -> FileTree through the registered backends and their templates, the
Jinja environment, the pinned formatter, and `contract`: the names that generated code,
deploy and graph share."""
