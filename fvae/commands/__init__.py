"""The ``fvae`` command's subcommands, one module per job; :mod:`fvae.cli` parses and dispatches."""
