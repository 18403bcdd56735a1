"""Data files that ship with riskgate's risk stage (read with ``importlib.resources``)."""
