"""The errors the helpers of ``modules/`` raise (never dispatched: leading ``_``).

The bottom of the helper layer: every helper and module that raises one of these imports it from
here, so no helper names the wire layer (``connection``) for an exception class.

* :class:`ConfigError` is ``mrdhelper``'s (the module-facing API, which raises it for JSON
  parameters and cannot import from ``modules/``), re-exported: one type for unusable JSON values,
  TOML settings and module options.  It is an :class:`MrdError` and a ``ValueError``.
* :class:`MrdError` is the server's base of errors whose message says it all: the server logs them
  in one line, without a traceback, and sends the message to the client.  Helper errors of that kind
  (``_bart.BartError``) derive from it.
"""
from __future__ import annotations

from connection import MrdError
from mrdhelper import ConfigError

__all__ = ["ConfigError", "MrdError"]
