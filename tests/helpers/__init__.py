"""Shared helpers of the test suite, one module per concern; tests import them as ``from helpers.<module> import``.

tests/ has no ``__init__.py``: pytest's default import mode puts tests/ first on ``sys.path``, so ``helpers`` is
found whether the whole suite runs, one file runs, or pytest is started from another folder.
"""
