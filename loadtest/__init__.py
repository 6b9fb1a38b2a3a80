"""Load tests with locust: realistic users, load shapes and SLO gates (docs/loadtesting.md).

The modules here other than `locustfile.py` and `run.py` are plain functions and data, with no locust
import, so the test suite can check them in-process.
"""
