"""Local deploy, the embedded default: run the compiled system on this machine for real."""
