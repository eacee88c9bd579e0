"""UIDs, UIDVALIDITY and flags survive a restart of ``mailcoach serve`` (and a kill -9)."""

from __future__ import annotations

import imaplib
import signal

import pytest

from tests.support import ServerProcess, config_data, write_config

FOLDERS = ("INBOX", "Keep", "Sent", "Agents/swe1@localdomain")


def login(proc: ServerProcess, password: str) -> imaplib.IMAP4:
    assert proc.imap_port, proc.banner
    client = imaplib.IMAP4("127.0.0.1", proc.imap_port, timeout=20)
    client.login("user@localdomain", password)
    return client


def picture(client: imaplib.IMAP4) -> dict:
    """Everything a syncing client relies on, per folder."""
    out = {}
    for folder in FOLDERS:
        typ, _ = client.select(folder, readonly=True)
        assert typ == "OK", folder
        validity = client.untagged_responses["UIDVALIDITY"][-1]
        uidnext = client.untagged_responses["UIDNEXT"][-1]
        typ, data = client.fetch("1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        # \Recent is a session's, not the folder's: a restart starts it afresh
        rows = [(item[0].split(b" BODY")[0].replace(b" \\Recent", b""), item[1])
                for item in data if isinstance(item, tuple)]
        out[folder] = (validity, uidnext, rows)
    return out


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_restart_keeps_uids_uidvalidity_and_flags(tmp_path, how):
    path = write_config(tmp_path / "mailcoach.yaml", config_data(tmp_path / "data"))
    proc = ServerProcess(path).start()
    try:
        password = (tmp_path / "data" / "login").read_text().strip()
        client = login(proc, password)
        for n in range(4):
            client.append("INBOX", None, None,
                          b"From: swe1@localdomain\r\nSubject: m%d\r\n\r\nbody\r\n" % n)
        client.create("Keep")
        client.append("Keep", r"(\Flagged)", None, b"Subject: kept\r\n\r\nx\r\n")
        client.select("INBOX")
        client.store("1", "+FLAGS", r"(\Seen Old)")
        client.store("2", "+FLAGS", r"(\Deleted)")
        client.expunge()
        client.store("2", "+FLAGS", r"(\Answered)")  # was message 3
        client.copy("1", "Sent")
        before = picture(client)
        client.logout()
    finally:
        if how == signal.SIGKILL:
            proc.kill9()
        else:
            assert proc.stop(how) == 0
    assert before["INBOX"][2][0][0].startswith(b"1 (UID 1 FLAGS (\\Seen Old)")
    assert [row.split()[2] for row, _ in before["INBOX"][2]] == [b"1", b"3", b"4"]

    proc = ServerProcess(path).start()
    try:
        client = login(proc, password)
        after = picture(client)
        # new mail keeps counting from where it was, never reusing UID 2
        client.append("INBOX", None, None, b"Subject: after\r\n\r\nx\r\n")
        client.select("INBOX", readonly=True)
        assert client.uid("SEARCH", "ALL")[1] == [b"1 3 4 5"]
        client.logout()
    finally:
        proc.stop()
    assert after == before
