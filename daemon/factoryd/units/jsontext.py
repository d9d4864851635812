"""`json.dumps(value)`, byte for byte, from json's C encoder made once.

`json.dumps` builds a new encoder on every call; the daemon encodes a small
object per run on its loop (a spawn request, a run's reservation and usage),
so the encoder is made once here and shared by those callers.
"""

from __future__ import annotations

import json
from typing import Any

_MAKE_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_ENCODE = (
    None
    if _MAKE_ENCODER is None
    else _MAKE_ENCODER(
        None, None, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )
)


def dumps(value: Any) -> str:
    """json.dumps(value); what the C encoder refuses (or a cycle) goes the usual way."""
    if _ENCODE is not None and value.__class__ is dict:
        try:
            return "".join(_ENCODE(value, 0))
        except Exception:  # noqa: S110 - json.dumps below encodes it or raises as usual
            pass
    return json.dumps(value)
