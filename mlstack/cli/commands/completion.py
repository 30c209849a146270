"""mlstack completion bash|zsh: print a shell completion script."""

from __future__ import annotations

import argparse
import sys

from mlstack.cli.arguments import add_verb

HELP = "print a shell completion script (bash or zsh)"


def register(sub) -> None:
    p = add_verb(sub, "completion", HELP, HELP + ", generated from the CLI itself. Bash: "
                 "eval \"$(mlstack completion bash)\" in ~/.bashrc. Zsh: source <(mlstack "
                 "completion zsh) in ~/.zshrc, after compinit.")
    p.add_argument("shell", choices=("bash", "zsh"), help="the shell")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from mlstack.cli.completion import completion_script
    from mlstack.cli.main import build_parser

    sys.stdout.write(completion_script(args.shell, build_parser()))
    return 0
