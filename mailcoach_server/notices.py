"""The one builder of the notices mailcoach itself writes (a thread stopped, a budget spent).

``notice`` returns the bytes to hand to ``submit``. It builds an
``email.message.EmailMessage`` instead of gluing header lines together, so
a subject that came from outside is encoded (RFC 2047) and folded, and a
line break in any value is refused rather than starting a header of its
own. Deciding when to write a notice is the runtime's business, not this.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import default

__all__ = ["SYSTEM_NAME", "notice"]

#: The display name of the system's From address (as Postfix's bounces have it).
SYSTEM_NAME = "Mail Delivery System"

# LF line ends, like every other message handed to ``submit``.
_POLICY = default.clone(linesep="\n")


def notice(sender: str, to: str, subject: str, body: str, *, message_id: str,
           in_reply_to: str = "", references: Sequence[str] = (),
           headers: Mapping[str, str] | None = None) -> bytes:
    """A plain-text, auto-generated message from the system address ``sender``.

    Args:
        message_id: the notice's own Message-ID (``postmaster.new_message_id``).
        in_reply_to, references: how it threads; ``References`` is left out when empty.
        headers: further fields, e.g. ``{ERROR_HEADER: "budget"}``.

    Raises:
        ValueError: a header value holds a line break.
    """
    message = EmailMessage(policy=_POLICY)
    message["From"] = Address(SYSTEM_NAME, addr_spec=sender)
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = message_id
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
    if references:
        message["References"] = " ".join(references)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: nobody answers it automatically
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(body, charset="utf-8", cte="8bit")
    return message.as_bytes()
