"""SMTP submission with AUTH, through aiosmtplib: a reply leaves the worker here.

A 5xx answer is a ``SubmitError`` (the worker hands the reply to a human
instead); a 4xx, a dropped or refused connection is an ``OSError`` (the
worker sends the same bytes again with backoff); a refused login is a
``LoginRefused`` (the party's configuration is wrong).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import aiosmtplib

from ..errors import SubmitError
from .connection import LoginRefused
from .settings import MailServer

__all__ = ["SmtpSubmitter", "SubmissionDeferred"]

log = logging.getLogger("mailcoach.worker.smtp")


class SubmissionDeferred(ConnectionError):
    """The SMTP server cannot take the message now (4xx, connection trouble)."""


class SmtpSubmitter:
    def __init__(self, server: MailServer, login: str, password: str) -> None:
        self.server = server
        self.login = login
        self._password = password

    async def submit(self, raw: bytes, *, sender: str, recipients: Sequence[str]) -> None:
        where = f"{self.server.host}:{self.server.port}"
        try:
            errors, _ = await aiosmtplib.send(
                raw, sender=sender, recipients=list(recipients), hostname=self.server.host,
                port=self.server.port, username=self.login, password=self._password,
                use_tls=self.server.security == "tls",
                start_tls=True if self.server.security == "starttls" else False,
                validate_certs=self.server.verify, timeout=60)
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise LoginRefused(f"the SMTP server {where} refused the login {self.login!r}: "
                               f"{exc.code} {exc.message}") from None
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
            raise SubmissionDeferred(f"cannot submit to {where}: {exc}") from None
        for recipient, (code, message) in (errors or {}).items():
            log.warning("%s: %s refused %s: %s %s", sender, where, recipient, code, message)
