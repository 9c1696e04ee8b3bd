"""The ``xnorkit`` command line: train | evaluate | convert | run | info | bench | export-c.

Each command family lives next to the code it drives and is registered here; a
family whose optional dependencies are missing is left out with a note in
``xnorkit --help`` rather than breaking the whole CLI.
"""

from __future__ import annotations

import importlib

import click

from xnorkit import __version__

# (module, attribute) pairs; each attribute is a click.Command or click.Group.
_COMMANDS = [
    ("xnorkit.train.cli", "train"),
    ("xnorkit.train.cli", "evaluate"),
    ("xnorkit.convert.cli", "convert"),
    ("xnorkit.convert.cli", "info"),
    ("xnorkit.convert.cli", "export_c"),
    ("xnorkit.engine_cli", "run"),
    ("xnorkit.engine_cli", "bench"),
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="xnorkit")
def main() -> None:
    """xnorkit: binary neural networks from training to every place they run."""


def _register() -> None:
    for module, attr in _COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:  # family not built yet / optional dep missing
            if exc.name and module.startswith(exc.name):
                continue
            raise
        cmd = getattr(mod, attr, None)
        if cmd is not None:
            main.add_command(cmd)


_register()

if __name__ == "__main__":  # pragma: no cover
    main()
