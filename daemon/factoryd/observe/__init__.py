"""Observability: Prometheus metrics and their exposition, structured logs."""
