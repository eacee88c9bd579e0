"""The private Dovecot + Postfix the worker's tests run against: mail flows, AUTH holds."""

from __future__ import annotations

import os
import smtplib
import socket

import pytest

from tests.mailservers import MailServers, require_mail_servers
from tests.support import wait_until

DOMAIN = "company.example"


@pytest.fixture
def mail():
    require_mail_servers()
    with MailServers(DOMAIN) as servers:
        servers.add_user(f"user@{DOMAIN}", "user-secret")
        servers.add_user(f"swe1@{DOMAIN}", "swe1-secret")
        yield servers


def message(sender: str, to: str, subject: str) -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '-')}@{DOMAIN}>\r\n\r\nbody\r\n").encode()


def test_submission_reaches_the_mailbox_over_lmtp(mail):
    mail.submit(f"user@{DOMAIN}", [f"swe1@{DOMAIN}"], message(f"user@{DOMAIN}", f"swe1@{DOMAIN}",
                                                              "first one"))
    got = wait_until(lambda: mail.messages(f"swe1@{DOMAIN}"), 30, "delivery")
    assert len(got) == 1 and b"Subject: first one" in got[0]
    assert b"Delivered-To: swe1@company.example" in got[0]  # Dovecot's LMTP stamped it
    client = mail.imap(f"swe1@{DOMAIN}")
    try:
        capabilities = client.capability()[1][0].split()
    finally:
        client.logout()
    assert b"CONDSTORE" in capabilities and b"IDLE" in capabilities


def test_submission_needs_the_right_password_and_the_own_address(mail):
    with smtplib.SMTP("127.0.0.1", mail.submission_port, timeout=30) as smtp, \
            pytest.raises(smtplib.SMTPAuthenticationError):
        smtp.login(f"user@{DOMAIN}", "wrong")
    with smtplib.SMTP("127.0.0.1", mail.submission_port, timeout=30) as smtp:
        smtp.login(f"swe1@{DOMAIN}", "swe1-secret")
        with pytest.raises(smtplib.SMTPRecipientsRefused):  # sender login mismatch
            smtp.sendmail(f"user@{DOMAIN}", [f"swe1@{DOMAIN}"],
                          message(f"user@{DOMAIN}", f"swe1@{DOMAIN}", "forged"))


def test_unknown_mailbox_is_refused_and_other_domains_are_not_relayed(mail):
    raw = b"Subject: x\r\n\r\nx\r\n"
    with smtplib.SMTP("127.0.0.1", mail.smtp_port, timeout=30) as smtp:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            smtp.sendmail("x@elsewhere.example", [f"nobody@{DOMAIN}"], raw)
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            smtp.sendmail("x@elsewhere.example", ["a@elsewhere.example"], raw)


def test_stopped_servers_leave_nothing_listening():
    require_mail_servers()
    with MailServers(DOMAIN) as servers:
        ports = [servers.imap_port, servers.lmtp_port, servers.smtp_port,
                 servers.submission_port]
        pids = [servers.dovecot.pid, servers.postfix.pid]
    for port in ports:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), 1).close()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
