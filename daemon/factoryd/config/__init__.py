"""TOML -> one immutable, validated configuration; every problem names its file and key."""
