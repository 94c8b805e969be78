"""The front ends of the ``sql-dl`` command: the only code that prints, and that nothing in
the engine imports.

``main`` parses the command line; ``shell`` is ``sql-dl sql``; ``server`` is ``sql-dl
serve``; ``demo`` and ``train`` are ``sql-dl demo`` and ``sql-dl train``.
"""
