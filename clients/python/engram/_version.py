"""The client's version: the package's, and the one engramd's ServerInfo is
compared with."""

__version__ = "0.1.0"
