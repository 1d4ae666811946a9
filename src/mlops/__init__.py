"""MLOps control plane: the machine-learning lifecycle behind one versioned REST API."""

__version__ = "0.1.0"
