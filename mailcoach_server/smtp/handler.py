"""The SMTP front end: an aiosmtpd handler over ``Engine.submit``.

aiosmtpd does the protocol (EHLO, AUTH PLAIN/LOGIN, SIZE, 8BITMIME,
SMTPUTF8, pipelining); this module only answers its hooks. Recipients are
checked at RCPT time, so a client learns about a refused address before it
sends the data; the message is on disk before DATA is answered 250.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from ..addresses import normalize_address
from ..credentials import Credentials
from ..errors import StoreError, SubmitError
from ..runtime.engine import Engine

__all__ = ["DeliveryHandler", "start_smtp"]

log = logging.getLogger("mailcoach.smtp")


class DeliveryHandler:
    """Accepts mail for local mailboxes and hands it to the engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        normalized = normalize_address(address)
        if normalized is None:
            return f"553 5.1.3 bad recipient address: {address}"
        try:
            self.engine.check_recipient(normalized)
        except SubmitError as exc:
            return exc.smtp_reply()
        envelope.rcpt_tos.append(normalized)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
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


def _authenticator(credentials: Credentials) -> Any:
    def authenticate(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                     auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        if credentials.check(login, password):
            return AuthResult(success=True, auth_data=login)
        log.warning("failed SMTP login for %r from %s", login, session.peer)
        return AuthResult(success=False, handled=False)
    return authenticate


async def start_smtp(engine: Engine, credentials: Credentials, *, host: str, port: int,
                     auth_required: bool, max_size: int, hostname: str,
                     allow_plaintext_auth: bool = False) -> asyncio.Server:
    """Listen for SMTP in the running loop (not aiosmtpd's threaded Controller)."""
    handler = DeliveryHandler(engine)
    loopback = host in ("127.0.0.1", "::1", "localhost")
    authenticator = _authenticator(credentials)

    def factory() -> SMTP:
        with warnings.catch_warnings():
            # aiosmtpd warns about AUTH without TLS; on loopback that is the design.
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            return SMTP(
                handler,
                hostname=hostname,
                ident="mailcoach ESMTP",
                data_size_limit=max_size,
                enable_SMTPUTF8=True,  # the bare SMTP class defaults to False
                decode_data=False,
                authenticator=authenticator,
                auth_required=auth_required,
                # No TLS here: plaintext AUTH only on loopback, unless the config
                # says the network is private (a container's published port).
                auth_require_tls=not (loopback or allow_plaintext_auth),
            )

    return await asyncio.get_running_loop().create_server(factory, host, port)
