"""Messages shared by the FETCH and SEARCH tests (LF line ends, as a store may keep them)."""

from __future__ import annotations

__all__ = ["MULTIPART", "PLAIN", "NO_HEADERS"]

# multipart/mixed: a QP text part, a base64 attachment, and a message/rfc822
# whose body is multipart/alternative.
MULTIPART = (
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\n"
    b"From: Fred Foobar <foobar@Blurdybloop.example>\n"
    b"Subject: =?utf-8?q?Caf=C3=A9?= report\n"
    b'To: mooch@owatagu.example, "Joe Q." <joe@example.org>\n'
    b"Message-ID: <B27397-0100000@Blurdybloop.example>\n"
    b"MIME-Version: 1.0\n"
    b'Content-Type: multipart/mixed; boundary="outer"\n'
    b"\n"
    b"This is the preamble.\n"
    b"--outer\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: quoted-printable\n"
    b"\n"
    b"Hello Joe, caf=C3=A9 tonight?\n"
    b"Second line.\n"
    b"--outer\n"
    b'Content-Type: application/pdf; name="report.pdf"\n'
    b'Content-Disposition: attachment; filename="report.pdf"\n'
    b"Content-Transfer-Encoding: base64\n"
    b"Content-ID: <part2@example>\n"
    b"\n"
    b"JVBERi0xLjQKJcfs\n"
    b"--outer\n"
    b"Content-Type: message/rfc822\n"
    b"\n"
    b"From: inner@example.org\n"
    b"Subject: inner\n"
    b"Content-Type: multipart/alternative; boundary=inner\n"
    b"\n"
    b"--inner\n"
    b"Content-Type: text/plain\n"
    b"\n"
    b"plain inner\n"
    b"--inner\n"
    b"Content-Type: text/html\n"
    b"\n"
    b"<p>html inner</p>\n"
    b"--inner--\n"
    b"--outer--\n"
    b"epilogue\n"
)

# No Date, no To, no Content-Type; a folded encoded-word subject.
PLAIN = (
    b"From: =?iso-8859-1?q?Andr=E9?= <andre@example.com>\r\n"
    b"Subject: =?utf-8?b?R3LDvMOfZQ==?=\r\n"
    b" and more\r\n"
    b"X-Tag: Alpha\r\n"
    b"\r\n"
    b"Body line one\r\n"
    b"second LINE with Needle\r\n"
)

NO_HEADERS = b"\r\njust a body\r\n"
