"""convdistill: distil multi-turn chat ability from conversation trees into small models."""

__version__ = "0.1.0"
