"""Industrial edge gateway: ingest -> judge -> keep -> deliver."""

__version__ = "0.1.0"
