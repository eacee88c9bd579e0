"""The SMTP listener: aiosmtpd's ``SMTP`` protocol in our loop, with our login.

``start_smtp`` builds one ``SubmissionServer`` per connection. It differs
from aiosmtpd's ``SMTP`` in three places only: AUTH PLAIN/LOGIN answers go
through the shared :class:`~mailcoach_server.login_throttle.LoginThrottle`
(a wrong password is answered late, per client address), sessions keep
the legacy ``login_data`` quietly (aiosmtpd 1.4 sets it itself on every
login and logs a deprecation warning each time: aio-libs/aiosmtpd#347), and
the path of MAIL FROM and RCPT TO is parsed with the same result for less
CPU (aiosmtpd 1.4 defines a class on every call, ~85 us, and a plain
``<local@domain>`` needs no RFC 5322 parser: together ~0.2 ms a message).

Whether AUTH is required is the handler's policy (its MAIL hook), not
aiosmtpd's ``auth_required``: on loopback AUTH without TLS is the design,
and aiosmtpd warns at every connection when both are asked of it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from ..credentials import Credentials
from ..login_throttle import LoginThrottle
from ..runtime.engine import Engine
from .handler import DeliveryHandler

__all__ = ["SubmissionServer", "start_smtp"]

log = logging.getLogger("mailcoach.smtp")

# The one result that means "wrong user or password" (aiosmtpd then answers 535).
_REFUSED = AuthResult(success=False, handled=False)

# RFC 5322 §3.2.3 atext: a path whose local part and domain are dot-atoms parses to
# itself; after the '>' the parser skips white space when a blank starts it.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*)>")


class _Session(Session):
    """aiosmtpd's session without the warning on the ``login_data`` aiosmtpd itself sets.

    We read ``authenticated`` and ``auth_data``, the current API.
    """

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class SubmissionServer(SMTP):
    """One SMTP connection: aiosmtpd's protocol, our login check and throttle."""

    def __init__(self, handler: DeliveryHandler, *, credentials: Credentials,
                 throttle: LoginThrottle, **options: Any) -> None:
        self._credentials = credentials
        self._throttle = throttle
        super().__init__(handler, authenticator=self._check_login, **options)

    def _create_session(self) -> Session:
        return _Session(self.loop)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's path parsing (same results), without its per-call class."""
        if not arg:
            return "", ""
        plain = _PLAIN_PATH.match(arg)
        rest = arg[plain.end():] if plain is not None else ""
        if rest[:1] in (" ", "\t"):
            rest = rest.lstrip()
        if plain is not None and not rest.startswith("("):  # a comment: the parser's
            addr = plain.group(1)
        else:
            try:
                parse = get_angle_addr if arg.lstrip().startswith("<") else get_addr_spec
                address, rest = parse(arg)
            except HeaderParseError:
                return None, None
            addr = address.addr_spec
        localpart = addr.rpartition("@")[0]
        if self.local_part_limit and len(localpart) > self.local_part_limit:
            return None, None
        return addr, rest

    def _check_login(self, server: SMTP, session: Session, envelope: Envelope,
                     mechanism: str, auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return _REFUSED
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        if self._credentials.check(login, password):
            return AuthResult(success=True, auth_data=login)
        log.warning("failed SMTP login for %r from %s", login[:80], self._client())
        return _REFUSED

    # The built-in mechanisms, answered when the throttle says so.
    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._throttled(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._throttled(await super().auth_LOGIN(_, args))

    async def _throttled(self, result: AuthResult) -> AuthResult:
        if result is _REFUSED:
            await self._throttle.failed(self._client())
        elif result.success:
            await self._throttle.succeeded(self._client())
        return result  # a malformed or aborted AUTH was answered already; no password checked

    def _client(self) -> str:
        peer = self.session.peer if self.session is not None else None
        return str(peer[0]) if isinstance(peer, tuple) else str(peer)


async def start_smtp(engine: Engine, credentials: Credentials, *, host: str, port: int,
                     auth_required: bool, max_size: int, hostname: str,
                     throttle: LoginThrottle, allow_plaintext_auth: bool = False) -> asyncio.Server:
    """Listen for SMTP in the running loop (not aiosmtpd's threaded Controller)."""
    handler = DeliveryHandler(engine, auth_required=auth_required)
    plaintext_ok = host in ("127.0.0.1", "::1", "localhost") or allow_plaintext_auth

    def factory() -> SMTP:
        return SubmissionServer(
            handler,
            credentials=credentials,
            throttle=throttle,
            hostname=hostname,
            ident="mailcoach ESMTP",
            data_size_limit=max_size,
            enable_SMTPUTF8=True,  # the bare SMTP class defaults to False
            decode_data=False,
            # No TLS here: plaintext AUTH only on loopback, unless the config
            # says the network is private (a container's published port).
            auth_require_tls=not plaintext_ok,
        )

    return await asyncio.get_running_loop().create_server(factory, host, port)
