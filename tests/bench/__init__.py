"""Benchmarks of the stack's commands against the raw tools, same machine, same run.

`nox -s bench -- [--backend native|compose|both] [--sizes 100MB,1GB] [--runs N] [--quick]`.
"""
