"""One run: from a routing decision to a started, watched and stopped process; agent adapters."""
