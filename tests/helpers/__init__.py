"""Helpers the tests share (fixtures are in ``tests/conftest.py``): test data (`data`), the
independent references results are compared with (`reference`), and the processes some
tests start: the ``sql-dl`` command, servers, clients and long scripts (`processes`).

No test module imports another; they import from here.
"""
