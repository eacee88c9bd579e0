"""The SMTP listener: aiosmtpd's ``SMTP`` protocol in our loop, with our login.

``start_smtp`` builds one ``SubmissionServer`` per connection. It differs
from aiosmtpd's ``SMTP`` in two places only: AUTH PLAIN/LOGIN answers go
through the shared :class:`~mailcoach_server.login_throttle.LoginThrottle`
(a wrong password is answered late, per client address), and sessions keep
the legacy ``login_data`` quietly (aiosmtpd 1.4 sets it itself on every
login and logs a deprecation warning each time: aio-libs/aiosmtpd#347).

Whether AUTH is required is the handler's policy (its MAIL hook), not
aiosmtpd's ``auth_required``: on loopback AUTH without TLS is the design,
and aiosmtpd warns at every connection when both are asked of it.
"""

from __future__ import annotations

import asyncio
import logging
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
