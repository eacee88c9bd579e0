"""MAIL FROM / RCPT TO paths: ``SubmissionServer`` parses them as aiosmtpd does, faster.

The server's own ``_getaddr`` skips the RFC 5322 parser for a plain
``<local@domain>``; these tests hold it to aiosmtpd's answer on the paths
clients send, the odd ones, and many made at random.
"""

from __future__ import annotations

import random

import pytest
from aiosmtpd.smtp import SMTP

from mailcoach_server.smtp.server import SubmissionServer

PATHS = [
    "<user@localdomain>", "<user@localdomain> SIZE=2048", "<user@localdomain>\tSIZE=1",
    "<a.b@c.d>  BODY=8BITMIME", "<user+tag@sub.domain-x.org> SIZE=5", "<A@B>", "<a%b@c>",
    "<a..b@c>", "<.a@b>", "<a.@b>", "<a@b.>", '<"q u"@b>', "<a@[127.0.0.1]>", "<>",
    " <a@b>", "<a@b>(comment) X", "<a@b> (c) X", "<a@b> ) x", "a@b", "a@b SIZE=1", "<a@b",
    "a", "<a>", "<@b:a@c>", "<héllo@b>", "<a@b>x", "<a@b>  ", "<a b@c>", "<a@b c>",
    "<a\\@b@c>", "<a@b@c>", "<a@-b>", "<a@b>>", "<<a@b>>", "<a@b> \r\n", "<a@b>\r\n",
    "<x@y>\x00", "<a@b>\u00a0X", "<a@b> \u00a0(x) Y", "",
]


def random_paths(count: int) -> list[str]:
    rng = random.Random(5321)
    noise = "ab.@<> \t()\"[]\\-+é\r"
    made = ["".join(rng.choice(noise) for _ in range(rng.randint(1, 12))) for _ in range(count)]
    made += ["<" + "".join(rng.choice("ab.@") for _ in range(rng.randint(1, 8))) + ">"
             + rng.choice(["", " ", "\t", " (c)", "x", "  X=1"]) for _ in range(count)]
    return made


def parsed(cls: type[SMTP], path: str, limit: int) -> object:
    server = cls.__new__(cls)  # _getaddr reads one attribute: no connection needed
    server.local_part_limit = limit
    try:
        return SMTP._getaddr(server, path) if cls is SMTP else server._getaddr(path)
    except Exception as exc:  # the same failure counts as the same answer
        return type(exc)


@pytest.mark.parametrize("limit", [0, 1])
def test_paths_parse_as_aiosmtpd_parses_them(limit):
    differ = [path for path in PATHS + random_paths(3000)
              if parsed(SubmissionServer, path, limit) != parsed(SMTP, path, limit)]
    assert differ == []


def test_a_plain_path_and_its_parameters():
    assert parsed(SubmissionServer, "<user@localdomain> SIZE=2048", 0) == (
        "user@localdomain", "SIZE=2048")
    assert parsed(SubmissionServer, "<a@b>", 0) == ("a@b", "")
    assert parsed(SubmissionServer, "<abcd@b>", 3) == (None, None)  # local part over the limit
