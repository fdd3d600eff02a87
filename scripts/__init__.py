"""Implementation of the AI Marketplace stack tasks; tasks.py and noxfile.py are thin drivers.

One module per concern: settings, backends (compose, native), probes, stack operations.
"""
