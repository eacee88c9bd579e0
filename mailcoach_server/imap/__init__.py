"""The IMAP4rev1 server: a pure protocol core and (later) a thin asyncio adapter.

The core does no I/O and knows no store:

* ``parser`` (with ``lexer``, ``grammar``, ``command``, ``utf7``): bytes → commands;
* ``sequence``: sequence sets;
* ``responses`` (with ``wire``): responses and domain errors → bytes;
* ``fetch`` (with ``mime``, ``bodystructure``) and ``search``: FETCH items and
  SEARCH matching over raw message bytes;
* ``connection``: the per-client state machine tying them together.

Import from the submodules; this package re-exports nothing.
"""

__all__: list[str] = []
