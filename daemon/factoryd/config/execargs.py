"""What may reach execve: a program to run, and environment variable names.

The kernel takes C strings: no argument, environment entry or path can
carry a NUL byte (tomltable refuses NUL in every string it reads), an
environment name cannot contain `=`, and an empty program name cannot be
executed. Such values used to pass `check` and fail only at spawn time,
inside the spawn helper; they are refused here instead, where the config
and every submission are read, naming the file and key. Messages name the
key, never the value: an environment value may be a credential.
"""

from __future__ import annotations

from factoryd.config.tomltable import Table


def check_program(t: Table, name: str, argv: tuple[str, ...] | None) -> None:
    """The first element of an argv names a program: it must not be blank."""
    if argv and not argv[0].strip():
        t.owner.problem(f"{t.key(name)}[0]", "the program to run must not be empty")


def bad_env_name(key: str) -> bool:
    return not key or "=" in key or "\0" in key


def check_env_names(t: Table, name: str, keys: list[str]) -> None:
    """Names of a table of environment variables (`env`, `secrets`)."""
    for key in keys:
        if bad_env_name(key):
            t.owner.problem(
                f"{t.key(name)}.{quoted(key)}",
                "an environment variable name must not be empty or contain '=' or NUL",
            )


def check_name_list(t: Table, name: str, keys: tuple[str, ...]) -> None:
    """A list of environment variable names (`inherit_env`)."""
    for i, key in enumerate(keys):
        if bad_env_name(key):
            t.owner.problem(
                f"{t.key(name)}[{i}]",
                "an environment variable name must not be empty or contain '=' or NUL",
            )


def quoted(key: str) -> str:
    """A key as it appears in a key path: bare if plain, else quoted and escaped."""
    if key and all(c.isalnum() or c in "_-" for c in key):
        return key
    return '"' + key.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
