"""The ``dlstream`` command line, one module per command group (:mod:`dlstream.cli.main` is the entry
point)."""
