"""fx: federated learning workspaces over mutual TLS."""

__version__ = "0.1.0"
