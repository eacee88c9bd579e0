"""TLS and STARTTLS against the private Dovecot + Postfix with their own CA: the worker
verifies the certificate it is shown, trusts the CA named by ``ca_file``, and never goes
on in plaintext when TLS was asked for."""

from __future__ import annotations

import shutil

import pytest
import yaml

from mailcoach_server.worker.connection import ImapConnection, LoginRefused
from mailcoach_server.worker.settings import MailServer
from mailcoach_server.worker.submit import SmtpSubmitter
from mailcoach_server.worker.tls import TlsUnavailable
from tests.worker.support import (
    SWE1,
    USER,
    WorkerProcess,
    mail_system,
    question,
    wait_for_messages,
    write_worker_config,
)

PASSWORD = "swe1-secret"


@pytest.fixture
def tls_mail():
    yield from mail_system(tls=True)


@pytest.fixture
def plain_mail():
    yield from mail_system()


def endpoints(mail, imap: str, smtp: str, *, ca: str | None = "ca.pem",
              smtp_ca: str | None = "ca.pem") -> dict:
    """worker.yaml's imap and smtp for the given security, on the matching ports."""
    imap_port = {"tls": mail.imaps_port, "starttls": mail.imap_port, "none": mail.imap_port}
    smtp_port = {"tls": mail.submissions_port, "starttls": mail.submission_port,
                 "none": mail.submission_port}
    result = {"imap": {"host": "127.0.0.1", "port": imap_port[imap], "security": imap},
              "smtp": {"host": "127.0.0.1", "port": smtp_port[smtp], "security": smtp}}
    if ca and imap != "none":
        result["imap"]["ca_file"] = ca
    if smtp_ca and smtp != "none":
        result["smtp"]["ca_file"] = smtp_ca
    return result


def worker_config(tmp_path, mail, model_server, **servers):
    tmp_path.mkdir(parents=True, exist_ok=True)
    if mail.ca_file is not None:
        shutil.copy(mail.ca_file, tmp_path / "ca.pem")  # relative to worker.yaml
    return write_worker_config(tmp_path, mail, model_server, [SWE1], **servers)


@pytest.mark.parametrize(("imap", "smtp"), [("tls", "starttls"), ("starttls", "tls")])
def test_the_worker_answers_over_tls_and_starttls(tls_mail, model_server, tmp_path, imap, smtp):
    model_server.responder = lambda body: f"To: {USER}\nSubject: over TLS\n\nsecured"
    config = worker_config(tmp_path, tls_mail, model_server, **endpoints(tls_mail, imap, smtp))
    with WorkerProcess(config):
        tls_mail.submit(USER, [SWE1], question("Is this private?"))
        [answer] = wait_for_messages(tls_mail, USER, 1)
    assert answer["Subject"] == "over TLS" and "secured" in answer.get_payload()
    # Every IMAP login of the worker went through TLS (Dovecot logs "secured", not "TLS",
    # for a plaintext one from loopback) ...
    logins = tls_mail.imap_logins(SWE1)
    assert logins and all(", TLS," in line for line in logins), logins
    # ... and Postfix received the reply with TLS and AUTH (RFC 3848's ESMTPSA).
    received = " ".join(answer.get_all("Received"))
    assert "with ESMTPSA" in received and "using TLSv1." in received, received


async def test_imap_trusts_the_ca_file_and_refuses_an_unknown_certificate(tls_mail, tmp_path):
    for security, port in (("tls", tls_mail.imaps_port), ("starttls", tls_mail.imap_port)):
        trusted = MailServer("127.0.0.1", port, security, ca_file=str(tls_mail.ca_file))
        conn = await ImapConnection.open(trusted, SWE1, PASSWORD)
        try:
            assert conn.alive and "IDLE" in conn.capabilities
            assert conn._client.protocol.transport.get_extra_info("ssl_object") is not None
        finally:
            await conn.close()
        with pytest.raises(TlsUnavailable, match="not trusted: .*(unable to get local issuer"
                                                 "|self.signed)"):
            await ImapConnection.open(MailServer("127.0.0.1", port, security), SWE1, PASSWORD)
        # verify: false (tests only) takes any certificate, and still speaks TLS
        blind = MailServer("127.0.0.1", port, security, verify=False)
        conn = await ImapConnection.open(blind, SWE1, PASSWORD)
        await conn.close()
    with pytest.raises(LoginRefused):  # a wrong password over TLS is still a refused login
        await ImapConnection.open(MailServer("127.0.0.1", tls_mail.imaps_port, "tls",
                                             ca_file=str(tls_mail.ca_file)), SWE1, "wrong")
    assert all(", TLS," in line for line in tls_mail.imap_logins(SWE1))


async def test_smtp_check_trusts_the_ca_file_and_refuses_an_unknown_certificate(tls_mail):
    for security, port in (("tls", tls_mail.submissions_port),
                           ("starttls", tls_mail.submission_port)):
        trusted = MailServer("127.0.0.1", port, security, ca_file=str(tls_mail.ca_file))
        await SmtpSubmitter(trusted, SWE1, PASSWORD).check()
        with pytest.raises(LoginRefused, match="refused the login"):
            await SmtpSubmitter(trusted, SWE1, "wrong").check()
        with pytest.raises(TlsUnavailable, match=f"SMTP server 127.0.0.1:{port} shows a "
                                                 "certificate that is not trusted"):
            await SmtpSubmitter(MailServer("127.0.0.1", port, security), SWE1, PASSWORD).check()
        blind = MailServer("127.0.0.1", port, security, verify=False)
        await SmtpSubmitter(blind, SWE1, PASSWORD).check()


async def test_a_server_without_starttls_is_refused_not_used_in_plaintext(plain_mail):
    imap = MailServer("127.0.0.1", plain_mail.imap_port, "starttls")
    with pytest.raises(TlsUnavailable, match="offers no STARTTLS"):
        await ImapConnection.open(imap, SWE1, PASSWORD)
    assert plain_mail.imap_logins(SWE1) == []  # the password never went over in plaintext
    smtp = MailServer("127.0.0.1", plain_mail.submission_port, "starttls")
    with pytest.raises(TlsUnavailable, match="offers no STARTTLS"):
        await SmtpSubmitter(smtp, SWE1, PASSWORD).check()
    # implicit TLS on a plaintext port: no handshake, retried as a server that is away
    with pytest.raises(OSError):
        await ImapConnection.open(MailServer("127.0.0.1", plain_mail.imap_port, "tls"),
                                  SWE1, PASSWORD)


def test_the_worker_stops_with_a_clear_error_when_starttls_is_missing(plain_mail,
                                                                       model_server, tmp_path):
    config = worker_config(tmp_path, plain_mail, model_server,
                           **endpoints(plain_mail, "starttls", "none", ca=None))
    worker = WorkerProcess(config).start(wait_ready=False)
    assert worker.wait(60) == 2
    assert (f"the IMAP server 127.0.0.1:{plain_mail.imap_port} offers no STARTTLS"
            in worker.stderr())
    assert plain_mail.imap_logins(SWE1) == []


def test_the_worker_stops_when_the_smtp_certificate_is_not_trusted(tls_mail, model_server,
                                                                   tmp_path):
    config = worker_config(tmp_path, tls_mail, model_server,
                           **endpoints(tls_mail, "tls", "starttls", smtp_ca=None))
    worker = WorkerProcess(config).start(wait_ready=False)
    assert worker.wait(60) == 2
    assert (f"the SMTP server 127.0.0.1:{tls_mail.submission_port} shows a certificate that "
            "is not trusted" in worker.stderr())


def test_ca_file_is_checked_with_the_rest_of_worker_yaml(tls_mail, model_server, tmp_path):
    from mailcoach_server.errors import ConfigError
    from mailcoach_server.worker.settings import load_worker_settings

    config = worker_config(tmp_path, tls_mail, model_server,
                           **endpoints(tls_mail, "tls", "starttls"))
    settings = load_worker_settings(config)
    assert settings.imap.ca_file == str((tmp_path / "ca.pem").resolve())
    assert settings.imap.verify and settings.smtp.verify  # verification on by default
    data = yaml.safe_load(config.read_text())
    for change, problem in (({"ca_file": "missing.pem"}, "cannot read"),
                            ({"ca_file": "worker.yaml"}, "no PEM certificates"),
                            ({"security": "none"}, "security is none")):
        broken = {**data, "imap": {**data["imap"], **change}}
        config.write_text(yaml.safe_dump(broken))
        with pytest.raises(ConfigError, match=f"key 'imap.ca_file': .*{problem}"):
            load_worker_settings(config)


class StarttlsScript:
    """An IMAP server on loopback that answers STARTTLS as told (``reply``, after the tag),
    for what Dovecot never does: refuse it, or add bytes after its OK (an injection)."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.commands: list[bytes] = []
        self.writers: list = []

    async def __aenter__(self) -> StarttlsScript:
        import asyncio

        async def serve(reader, writer):
            self.writers.append(writer)
            writer.write(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n")
            while line := await reader.readline():
                self.commands.append(line)
                tag, _, command = line.strip().partition(b" ")
                if command.upper() == b"CAPABILITY":
                    writer.write(b"* CAPABILITY IMAP4rev1 STARTTLS\r\n" + tag + b" OK done\r\n")
                elif command.upper() == b"STARTTLS":
                    writer.write(tag + b" " + self.reply)  # one write: one segment
                else:
                    writer.write(tag + b" BAD not in this script\r\n")
                await writer.drain()
            writer.close()
        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for writer in self.writers:  # the connections too, not only the listener
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
        await self.server.wait_closed()


@pytest.mark.parametrize(("reply", "problem"), [
    (b"NO [ALERT] not today\r\n", "refused STARTTLS: .*not today"),
    (b"OK begin TLS\r\n* CAPABILITY IMAP4rev1 AUTH=PLAIN", "sent data after its STARTTLS"),
])
async def test_a_refused_or_tampered_starttls_is_an_error_not_plaintext(reply, problem):
    async with StarttlsScript(reply) as server:
        with pytest.raises(TlsUnavailable, match=problem):
            await ImapConnection.open(MailServer("127.0.0.1", server.port, "starttls"),
                                      SWE1, PASSWORD)
    assert not any(b"LOGIN" in line.upper() for line in server.commands), server.commands
    assert any(line.upper().endswith(b"STARTTLS\r\n") for line in server.commands)
