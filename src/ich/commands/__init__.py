"""Subcommands of ``ich``: one module each, with ``add_parser(subparsers, name, help)``."""
