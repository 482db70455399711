"""Helpers the tests share: apps and jobs, servers and processes they start, waits.

``tests/`` is on ``sys.path`` (``pythonpath`` in pyproject's ``[tool.pytest.ini_options]``;
``bench/harness.py`` and the processes the helpers spawn put it there too), so everything
imports these as ``support.<module>``.
"""
