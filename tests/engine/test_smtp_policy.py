"""SMTP says no early (a foreign sender at MAIL FROM) and quietly (no warnings in normal
use); failed logins are slowed per client address, on SMTP and IMAP alike."""

from __future__ import annotations

import asyncio
import base64
import imaplib
import logging
import smtplib
import socket
import subprocess
import time
import warnings

import aiosmtplib
import pytest

from mailcoach_server.login_throttle import LoginThrottle
from tests.conftest import require_tool
from tests.sendmail import run_sendmail, sendmail_config
from tests.support import ServerProcess, make_config, mbox_messages, serve_in_process, wait_for

NOTE = b"From: user@localdomain\r\nTo: user@localdomain\r\nSubject: a note\r\n\r\nhello\r\n"
# Another loopback address: a second client as the server sees it (Linux routes 127/8 here).
OTHER_CLIENT = "127.0.0.2"


def throttled_config(tmp_path, delay=0.2, max_delay=0.4):
    return make_config(tmp_path, limits={"login_delay": delay, "login_delay_max": max_delay})


async def test_a_foreign_sender_is_refused_at_mail_from_and_the_connection_goes_on(tmp_path):
    async with serve_in_process(make_config(tmp_path)) as server:
        host, port = server.smtp_address
        before = server.store.message_count()

        def session():
            with smtplib.SMTP(host, port) as client:
                client.login(server.config.user, server.credentials.password)
                refused = client.mail("evil@example.com")
                # A second attempt in the same connection, RCPT never reached.
                with pytest.raises(smtplib.SMTPSenderRefused) as again:
                    client.sendmail("someone@elsewhere.org", ["user@localdomain"], NOTE)
                client.rset()
                mixed_case = client.mail("User@LocalDomain")
                client.rset()
                delivered = client.sendmail("user@localdomain", ["user@localdomain"], NOTE)
                return refused, again.value, mixed_case, delivered

        refused, again, mixed_case, delivered = await asyncio.to_thread(session)
        assert refused == (553, b"5.7.1 sender evil@example.com is not in the local domain "
                                b"localdomain")
        assert (again.smtp_code, again.sender) == (553, "someone@elsewhere.org")
        assert mixed_case[0] == 250
        assert delivered == {}
        assert server.store.message_count() == before + 1  # only the good one


async def test_a_malformed_sender_is_553_5_1_7(tmp_path):
    async with serve_in_process(make_config(tmp_path)) as server:
        host, port = server.smtp_address
        client = aiosmtplib.SMTP(hostname=host, port=port, start_tls=False, use_tls=False)
        await client.connect()
        await client.login(server.config.user, server.credentials.password)
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await client.mail("not..an@address")
        assert (refused.value.code, refused.value.message[:5]) == (553, "5.1.7")
        await client.quit()


async def test_the_null_sender_is_accepted_but_the_from_header_still_counts(tmp_path):
    async with serve_in_process(make_config(tmp_path)) as server:
        host, port = server.smtp_address
        before = server.store.message_count()

        def session():
            with smtplib.SMTP(host, port) as client:
                client.login(server.config.user, server.credentials.password)
                accepted = client.sendmail("", ["user@localdomain"], NOTE)  # MAIL FROM:<>
                with pytest.raises(smtplib.SMTPDataError) as foreign:
                    client.sendmail("", ["user@localdomain"],
                                    NOTE.replace(b"From: user@", b"From: bounce@example."))
                return accepted, foreign.value

        accepted, foreign = await asyncio.to_thread(session)
        assert accepted == {}
        assert foreign.smtp_code == 553 and b"5.7.1" in foreign.smtp_error
        assert server.store.message_count() == before + 1


async def test_mail_before_auth_is_530(tmp_path):
    async with serve_in_process(make_config(tmp_path)) as server:
        host, port = server.smtp_address
        client = aiosmtplib.SMTP(hostname=host, port=port, start_tls=False, use_tls=False)
        await client.connect()
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await client.mail("user@localdomain")
        assert refused.value.code == 530
        await client.quit()


def test_swaks_sees_the_refusal_before_data(tmp_path):
    swaks = require_tool("swaks")

    async def main():
        async with serve_in_process(make_config(tmp_path)) as server:
            host, port = server.smtp_address
            return await asyncio.to_thread(subprocess.run, [
                swaks, "--server", f"{host}:{port}", "--auth-user", server.config.user,
                "--auth-password", server.credentials.password, "--from", "evil@example.com",
                "--to", "user@localdomain", "--header", "Subject: x", "--body", "x",
            ], capture_output=True, text=True, timeout=60)

    result = asyncio.run(main())
    assert "<** 553 5.7.1 sender evil@example.com is not in the local domain" in result.stdout
    assert "DATA" not in result.stdout.split("<** 553", 1)[1]  # it stopped there
    assert result.returncode == 23  # swaks: error after MAIL FROM


def test_sendmail_with_a_foreign_envelope_sender_is_a_data_error(tmp_path):
    config = sendmail_config(tmp_path)
    with ServerProcess(config):
        result = run_sendmail(config, "-f", "evil@example.com", "user",
                              stdin=b"From: user@localdomain\nSubject: x\n\nx\n")
    assert result.returncode == 65  # EX_DATAERR, as for a refused From header
    assert "sender <evil@example.com> refused: 553 5.7.1" in result.stderr
    assert [m["Subject"] for m in mbox_messages(tmp_path / "data" / "trace")
            if m["Subject"] == "x"] == []


async def test_a_normal_session_logs_no_warning_and_warns_nothing(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with serve_in_process(make_config(tmp_path)) as server:
            host, port = server.smtp_address
            for _ in range(2):  # the warnings were per connection and per login
                await aiosmtplib.send(NOTE, sender="user@localdomain",
                                      recipients=["user@localdomain"], hostname=host,
                                      port=port, start_tls=False, use_tls=False,
                                      username=server.config.user,
                                      password=server.credentials.password)
    assert [(r.name, r.getMessage()) for r in caplog.records] == []
    assert [str(w.message) for w in caught] == []


# -- failed logins ----------------------------------------------------------------------


def _smtp_login(host, port, password, *, user="user@localdomain", source=None):
    """One AUTH PLAIN on a new connection: (succeeded, when the answer arrived).

    Not ``login()``: after a 535 it tries the next mechanism, a second failure.
    """
    with smtplib.SMTP(host, port, source_address=(source, 0) if source else None) as client:
        client.ehlo()
        client.user, client.password = user, password
        try:
            client.auth("PLAIN", client.auth_plain)
            ok = True
        except smtplib.SMTPAuthenticationError:
            ok = False
        return ok, time.monotonic()


async def test_failed_smtp_logins_are_answered_later_and_later(tmp_path):
    async with serve_in_process(throttled_config(tmp_path)) as server:
        host, port = server.smtp_address
        throttle = server.login_throttle
        answers, states = [], []
        for _ in range(3):
            ok, received = await asyncio.to_thread(_smtp_login, host, port, "wrong")
            assert not ok
            answers.append(received)
            states.append(throttle.state("127.0.0.1"))
        assert [(s.failures, s.last_delay) for s in states] == [(1, 0.2), (2, 0.4), (3, 0.4)]
        for before, after, received in zip(states, states[1:], answers[1:], strict=False):
            # Each answer was held until the server's own answer time, which is at least
            # one delay after the previous one.
            assert after.answer_at >= before.answer_at + after.last_delay
            assert received >= after.answer_at
        assert answers[2] - answers[0] >= 0.8
        # The right password clears the address.
        ok, _ = await asyncio.to_thread(_smtp_login, host, port, server.credentials.password)
        assert ok
        assert throttle.state("127.0.0.1") is None


async def test_the_throttle_is_shared_by_smtp_and_imap_and_kept_per_client(tmp_path):
    async with serve_in_process(throttled_config(tmp_path)) as server:
        smtp_host, smtp_port = server.smtp_address
        imap_host, imap_port = server.imap_address
        throttle = server.login_throttle
        ok, _ = await asyncio.to_thread(_smtp_login, smtp_host, smtp_port, "wrong")
        assert not ok

        def imap_login(password):
            with imaplib.IMAP4(imap_host, imap_port) as client:
                try:
                    client.login("user@localdomain", password)
                except imaplib.IMAP4.error as exc:
                    return str(exc), time.monotonic()
                return "OK", time.monotonic()

        first = throttle.state("127.0.0.1")
        answer, received = await asyncio.to_thread(imap_login, "wrong")
        assert "AUTHENTICATIONFAILED" in answer
        second = throttle.state("127.0.0.1")
        assert (second.failures, second.last_delay) == (2, 0.4)  # SMTP's failure counted
        assert second.answer_at >= first.answer_at + 0.4 and received >= second.answer_at

        # Another client address starts from the first delay, whatever 127.0.0.1 did.
        ok, _ = await asyncio.to_thread(_smtp_login, smtp_host, smtp_port, "wrong",
                                        source=OTHER_CLIENT)
        assert not ok
        other = throttle.state(OTHER_CLIENT)
        assert (other.failures, other.last_delay) == (1, 0.2)
        assert throttle.state("127.0.0.1").failures == 2

        answer, _ = await asyncio.to_thread(imap_login, server.credentials.password)
        assert answer == "OK"
        assert throttle.state("127.0.0.1") is None
        assert throttle.state(OTHER_CLIENT) is not None


async def test_a_throttled_client_blocks_nobody_else(tmp_path):
    # Long enough that the other client's whole session ends first on any machine.
    async with serve_in_process(throttled_config(tmp_path, 30.0, 30.0)) as server:
        host, port = server.smtp_address
        throttle = server.login_throttle
        wrong = base64.b64encode(b"\0user@localdomain\0wrong")
        waiting = socket.create_connection((host, port), timeout=30)
        try:
            waiting.sendall(b"EHLO waiting\r\nAUTH PLAIN " + wrong + b"\r\n")
            await wait_for(lambda: throttle.state("127.0.0.1"), what="the failure recorded")

            def other_client():
                with smtplib.SMTP(host, port, source_address=(OTHER_CLIENT, 0)) as client:
                    client.login(server.config.user, server.credentials.password)
                    return client.sendmail("user@localdomain", ["user@localdomain"], NOTE)

            assert await asyncio.to_thread(other_client) == {}
            waiting.setblocking(False)
            replies = b""
            with pytest.raises(BlockingIOError):  # nothing but the greeting and EHLO yet
                while chunk := waiting.recv(65536):
                    replies += chunk
            assert b"535" not in replies
            assert throttle.retry_after("127.0.0.1") > 0
        finally:
            waiting.close()


# -- the throttle itself ------------------------------------------------------------------


async def test_delays_double_up_to_the_cap_and_a_success_clears():
    throttle = LoginThrottle(delay=0.01, max_delay=0.03)
    delays, waited = [], []
    for _ in range(4):
        waited.append(await throttle.failed("10.0.0.1"))
        delays.append(throttle.state("10.0.0.1").last_delay)
    assert delays == [0.01, 0.02, 0.03, 0.03]
    assert throttle.state("10.0.0.1").failures == 4
    assert all(w >= d - 1e-9 for w, d in zip(waited, delays, strict=True))  # float rounding
    assert throttle.state("10.0.0.2") is None and throttle.retry_after("10.0.0.2") == 0.0
    await throttle.succeeded("10.0.0.1")
    assert throttle.state("10.0.0.1") is None


async def test_parallel_failures_from_one_address_wait_their_turn_up_to_the_cap():
    now = [100.0]  # the throttle's clock, stopped while the three register
    throttle = LoginThrottle(delay=0.01, max_delay=0.04, clock=lambda: now[0])
    tasks, answer_times = [], []
    for _ in range(3):
        tasks.append(asyncio.create_task(throttle.failed("10.0.0.1")))
        await asyncio.sleep(0)  # let it register
        answer_times.append(throttle.state("10.0.0.1").answer_at)
    # Queued: 0.01 after now, then 0.02 after that; the third (0.04 more) is capped
    # at 0.04 after now instead of 0.07: no login waits longer than the cap.
    assert answer_times == pytest.approx([100.01, 100.03, 100.04])
    assert not any(task.done() for task in tasks)  # none answered before its time
    now[0] = 200.0
    assert await asyncio.gather(*tasks) == pytest.approx([0.01, 0.03, 0.04])


async def test_ipv6_clients_count_per_64_and_mapped_ipv4_as_ipv4():
    throttle = LoginThrottle(delay=0.001)
    await throttle.failed("2001:db8:1:2::5")
    assert throttle.state("2001:db8:1:2:ffff::9").failures == 1
    assert throttle.state("2001:db8:1:3::5") is None
    await throttle.failed("::ffff:192.0.2.7")
    assert throttle.state("192.0.2.7").failures == 1


async def test_an_address_is_forgotten_after_a_quiet_while():
    throttle = LoginThrottle(delay=0.001, forget_after=0.0)
    await throttle.failed("10.0.0.1")
    await wait_for(lambda: throttle.state("10.0.0.1") is None, what="the address forgotten")


async def test_delay_zero_turns_it_off():
    throttle = LoginThrottle(delay=0.0)
    assert await throttle.failed("10.0.0.1") == 0.0
    assert throttle.state("10.0.0.1").failures == 1


def test_a_new_password_never_looks_like_an_option():
    # swaks, msmtp and friends read a leading "-" as a flag (the swaks test above
    # failed for the 1 password in 64 that did)
    from mailcoach_server.credentials import new_password

    passwords = {new_password() for _ in range(2000)}
    assert len(passwords) == 2000 and all(len(p) == 24 for p in passwords)
    assert not any(p[0] in "-_" for p in passwords)
