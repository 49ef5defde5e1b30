"""Command-line interface: one module per subcommand, discovered by ``main``.

A subcommand module defines ``NAME``, ``HELP``, optionally ``EXAMPLES`` (shown by ``--help``) and ``ORDER``,
``add_arguments(parser)`` and ``run(args) -> int``. It imports heavy libraries (torch, kubernetes) inside
``run`` only, so ``--help`` and job submission stay light.
"""
