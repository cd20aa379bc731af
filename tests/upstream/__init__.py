"""Other projects' own test suites, run against the package's classes with only their
imports swapped (tests/e2e/test_upstream_suites.py)."""
