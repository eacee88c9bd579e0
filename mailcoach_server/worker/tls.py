"""TLS for the worker's IMAP and SMTP connections: one client context per configured server.

Certificates are always verified, chain and name, against the system's CAs or,
with ``ca_file:``, against that file's CAs only (a company's private CA). Only
``verify: false`` turns verification off, and it exists for tests against a
server's own throwaway certificate, never for a deployment.

What this module is not: a connection. ``connection.py`` (IMAP) and
``submit.py`` (SMTP) use these contexts and classify what fails.
"""

from __future__ import annotations

import functools
import ssl

from ..errors import MailcoachError
from .settings import MailServer

__all__ = ["TlsUnavailable", "certificate_problem", "client_context"]


class TlsUnavailable(MailcoachError):
    """TLS as configured cannot be had: the server offers no STARTTLS, refuses it, or
    shows a certificate that is not trusted. Retrying will not help; the worker stops
    with this error rather than go on in plaintext."""


@functools.cache
def client_context(server: MailServer) -> ssl.SSLContext:
    """The context for ``server`` (made once: a context is meant to be shared)."""
    context = ssl.create_default_context(cafile=server.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not server.verify:  # tests only (see the module docstring)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def certificate_problem(exc: BaseException, server: MailServer, what: str) -> TlsUnavailable | None:
    """A ``TlsUnavailable`` naming the fix when ``exc`` (or what caused it) is a failed
    certificate check; None for anything else (a dropped connection is retried)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            reason = current.verify_message or current.reason or str(current)
            trust = (f"the CAs in {server.ca_file}" if server.ca_file
                     else "the system's CAs (give the CA that signed it as ca_file)")
            return TlsUnavailable(
                f"the {what} server {server.host}:{server.port} shows a certificate that "
                f"is not trusted: {reason}; this worker trusts {trust}")
        current = current.__cause__ or current.__context__
    return None
