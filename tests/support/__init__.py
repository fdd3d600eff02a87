"""Helpers the test sessions and suites share that the product has no use for: free ports,
who listens where, a Docker engine started and stopped for the compose suite, Chromium."""
