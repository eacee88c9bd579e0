"""The IMAP4rev1 server: a pure protocol core and a thin asyncio adapter over the store.

The core does no I/O and knows no store:

* ``parser`` (with ``lexer``, ``grammar``, ``command``, ``utf7``): bytes → commands;
* ``registry``: what a command is made of; ``parser.COMMAND_TABLE`` declares each
  command once (name, legal states, parser, handler name);
* ``sequence``: sequence sets;
* ``responses`` (with ``wire``): responses and domain errors → bytes;
* ``fetch`` (with ``mime``, ``bodystructure``) and ``search``: FETCH items and
  SEARCH matching over raw message bytes;
* ``connection``: the per-client state machine tying them together.

Over the store, still without sockets:

* ``folders``: real folders and the virtual ``Agents/<address>`` ones;
  ``listing``: LIST/LSUB; ``hub``: telling sessions what changed;
* ``selected``: one session's view of its selected mailbox (sequence numbers);
* ``messages``: message bytes in batches, with a shared cache;
* ``session``: what commands work on (backend, session, IDLE push);
* ``commands`` and ``message_commands``: ``do_select``, ``do_fetch``, ...

And the sockets: ``server`` (``start_imap``), the asyncio loop around it all.

Import from the submodules; this package re-exports nothing.
"""

__all__: list[str] = []
