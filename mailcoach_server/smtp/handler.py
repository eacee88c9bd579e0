"""The SMTP front end: an aiosmtpd handler over ``Engine.submit``.

aiosmtpd does the protocol (EHLO, AUTH PLAIN/LOGIN, SIZE, 8BITMIME,
SMTPUTF8, pipelining); this module only answers its hooks, as Postfix
would: AUTH and the sender are checked at MAIL FROM, recipients at RCPT
TO, so a client learns about a refusal before it sends the data; the
message is on disk before DATA is answered 250. The listener itself is
``smtp.server``. Addresses are normalised through a small cache: a client
names the same few addresses in every transaction, and the stdlib parser
costs ~50 us a time.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from aiosmtpd.smtp import SMTP, Envelope, Session

from ..addresses import address_problem, normalize_address
from ..errors import StoreError, SubmitError
from ..postmaster import check_sender, checked_recipient
from ..runtime.engine import Engine

__all__ = ["DeliveryHandler"]

log = logging.getLogger("mailcoach.smtp")

#: RFC 5321 §4.5.5: the null reverse-path of bounces and other notifications
NULL_SENDER = "<>"


@lru_cache(maxsize=4096)
def _normalized(address: str) -> str | None:
    return normalize_address(address)


class DeliveryHandler:
    """Accepts mail for local mailboxes and hands it to the engine."""

    def __init__(self, engine: Engine, *, auth_required: bool = True) -> None:
        self.engine = engine
        self.auth_required = auth_required

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        if self.auth_required and not session.authenticated:
            return "530 5.7.0 Authentication required"
        # The null sender is accepted, as every MTA must (RFC 5321 §4.5.5); the
        # From header is still checked after DATA.
        if address != NULL_SENDER:
            normalized = _normalized(address)
            if normalized is None:
                problem = address_problem(address) or "not an address"
                return f"553 5.1.7 bad sender address: {problem}"
            try:
                check_sender(normalized, domain=self.engine.config.domain)
            except SubmitError as exc:
                log.info("refused sender %s from %s: %s", normalized, _peer(session),
                         exc.smtp_reply())
                return exc.smtp_reply()
            address = normalized
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        try:
            # The one address check of every way in: the postmaster's (which says why
            # an address is refused; the cache only saves parsing a good one again).
            normalized = _normalized(address) or checked_recipient(address)
            self.engine.check_recipient(normalized)
        except SubmitError as exc:
            return exc.smtp_reply()
        envelope.rcpt_tos.append(normalized)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        peer = _peer(session)
        try:
            meta = await self.engine.submit(
                raw, origin="smtp", envelope_rcpts=list(envelope.rcpt_tos),
                received_from=f"{session.host_name or 'unknown'} ([{peer}])",
            )
        except SubmitError as exc:
            log.info("refused mail from %s: %s", peer, exc.smtp_reply())
            return exc.smtp_reply()
        except StoreError as exc:
            log.error("cannot store mail: %s", exc)
            return "451 4.3.0 cannot store the message now; try again later"
        return f"250 2.0.0 OK: queued as {meta.id}"


def _peer(session: Session) -> str:
    return str(session.peer[0]) if isinstance(session.peer, tuple) else str(session.peer)
