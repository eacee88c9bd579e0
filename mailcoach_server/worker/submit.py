"""SMTP submission with AUTH, through aiosmtplib: a reply leaves the worker here.

A 5xx answer is a ``SubmitError`` (the worker hands the reply to a human
instead); a 4xx, a dropped or refused connection is an ``OSError`` (the
worker sends the same bytes again with backoff); a refused login is a
``LoginRefused`` (the party's configuration is wrong).

TLS is aiosmtplib's (``use_tls`` from the first byte, ``start_tls`` after
EHLO), with the verifying context of ``worker/tls.py``. ``start_tls=True``
makes aiosmtplib refuse a server that offers no STARTTLS rather than go on in
plaintext. :meth:`SmtpSubmitter.check` runs once at start, so such a server,
an untrusted certificate or a refused login stops the worker with a clear
error (``TlsUnavailable``, ``LoginRefused``) before any mail waits on it;
during a submission the same troubles only defer it (nothing is lost).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

try:
    import aiosmtplib
except ImportError:  # pragma: no cover - the worker extra is not installed
    aiosmtplib = None

from ..errors import MailcoachError, SubmitError
from .connection import LoginRefused
from .settings import MailServer
from .tls import TlsUnavailable, certificate_problem, client_context

__all__ = ["SmtpSubmitter", "SubmissionDeferred"]

log = logging.getLogger("mailcoach.worker.smtp")

#: seconds an SMTP exchange may take before it counts as failed
_TIMEOUT = 60


class SubmissionDeferred(ConnectionError):
    """The SMTP server cannot take the message now (4xx, connection trouble)."""


class SmtpSubmitter:
    def __init__(self, server: MailServer, login: str, password: str) -> None:
        self.server = server
        self.login = login
        self._password = password

    @property
    def _where(self) -> str:
        return f"{self.server.host}:{self.server.port}"

    def _connection(self) -> dict[str, Any]:
        """aiosmtplib's connection arguments: where, TLS as configured, the login."""
        security = self.server.security
        return {"hostname": self.server.host, "port": self.server.port,
                "username": self.login, "password": self._password,
                "use_tls": security == "tls", "start_tls": security == "starttls",
                "tls_context": client_context(self.server) if security != "none" else None,
                "timeout": _TIMEOUT}

    async def check(self) -> None:
        """Connect, secure and log in once, then QUIT: problems no retry mends are raised.

        Raises:
            TlsUnavailable: no STARTTLS offered, or a certificate that is not trusted.
            LoginRefused: the server refused the login.
        An unreachable server is only logged: submissions retry it.
        """
        _require_library()
        client = aiosmtplib.SMTP(**self._connection())
        try:
            await client.connect()
            await client.quit()
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise self._refused(exc) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            tls = self._tls_problem(exc)
            if tls is not None:
                raise tls from None
            log.warning("the SMTP server %s cannot be checked now: %s", self._where, exc)
        finally:
            client.close()

    async def submit(self, raw: bytes, *, sender: str, recipients: Sequence[str]) -> None:
        where = self._where
        _require_library()
        try:
            errors, _ = await aiosmtplib.send(raw, sender=sender, recipients=list(recipients),
                                              **self._connection())
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise self._refused(exc) from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients
            code = min((r.code for r in refused), default=550)
            text = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in refused)
            if code < 500:
                raise SubmissionDeferred(f"{where} deferred the recipients: {text}") from None
            raise SubmitError(code, "5.1.1", f"refused by {where}: {text}"[:300]) from None
        except aiosmtplib.SMTPResponseException as exc:
            if 400 <= exc.code < 500:
                raise SubmissionDeferred(f"{where} answered {exc.code} {exc.message}") from None
            raise SubmitError(exc.code, "5.0.0", f"{where}: {exc.message}"[:300]) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            tls = self._tls_problem(exc)
            raise SubmissionDeferred(f"cannot submit to {where}: {tls or exc}") from None
        for recipient, (code, message) in (errors or {}).items():
            log.warning("%s: %s refused %s: %s %s", sender, where, recipient, code, message)

    def _refused(self, exc: aiosmtplib.SMTPAuthenticationError) -> LoginRefused:
        return LoginRefused(f"the SMTP server {self._where} refused the login "
                            f"{self.login!r}: {exc.code} {exc.message}")

    def _tls_problem(self, exc: BaseException) -> TlsUnavailable | None:
        if "STARTTLS extension not supported" in str(exc):  # aiosmtplib's words
            return TlsUnavailable(
                f"the SMTP server {self._where} offers no STARTTLS, and smtp.security is "
                "starttls: this worker will not submit in plaintext (use security: tls on "
                "the server's submissions port, usually 465)")
        return certificate_problem(exc, self.server, "SMTP")


def _require_library() -> None:
    """aiosmtplib, part of the worker extra: a clear error when it is not installed."""
    if aiosmtplib is None:
        raise MailcoachError("mailcoach worker needs aiosmtplib: "
                             "pip install 'mailcoach[worker]'")
