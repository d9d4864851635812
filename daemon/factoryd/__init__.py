"""factoryd: keep CLI coding agents running, routed by policy, observable by Prometheus."""

__version__ = "0.1.0"
