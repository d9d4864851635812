"""Agent adapters: one module per CLI, each owning its argv, env and output parser."""
