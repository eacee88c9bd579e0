"""``mailcoach worker``: agents and robots served from mailboxes on an IMAP + SMTP server.

The same parties as ``mailcoach serve`` (the steps in ``runtime/workers.py``
over the ``runtime/mailbox.Mailbox`` protocol), but each party's mailbox lives
on a real mail server (Dovecot + Postfix, or any provider): the worker logs in
as the party, waits on its INBOX with IDLE, and answers by SMTP submission.
Many workers on many machines share the load; the mail server is the
distributed engine, with state, leases and progress kept on it.

The IMAP client is aioimaplib, which is GPL-3.0-only: it is installed only
with the optional extra ``mailcoach[worker]``, never by the core package,
which stays MIT. SMTP submission goes through aiosmtplib (MIT).
"""

__all__: list[str] = []
