"""sql_dl's version, in a module of its own so that any module can read it without
importing the package face (``sql_dl/__init__.py``)."""

__version__ = "0.1.0"
