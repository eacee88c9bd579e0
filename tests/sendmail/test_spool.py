"""The spool: mail sent while the server is down is kept and delivered once at start."""

from __future__ import annotations

import re
import stat
import subprocess
import sys

from mailcoach_server.spool import (
    deliver_spool,
    pending,
    read_spool,
    spool_lock,
    write_spool,
)
from tests.sendmail import mbox_bytes, message, run_sendmail, sendmail_config
from tests.support import (
    ServerProcess,
    make_config,
    mbox_messages,
    serve_in_process,
    wait_until,
)

SPOOLED = re.compile(r"^mailcoach-sendmail: server not running \(127\.0\.0\.1:\d+: "
                     r"connection refused\); (message spooled in (\S+), it will|"
                     r"(\d+) messages spooled in (\S+), they will) be delivered when the "
                     r"server starts\n$")


def requests(data_dir):
    return [m["Subject"] for m in mbox_messages(data_dir / "trace")
            if m["From"] == "user@localdomain"]


def test_server_down_spools_then_delivers_exactly_once(tmp_path):
    config = sendmail_config(tmp_path)
    data = tmp_path / "data"
    one = run_sendmail(config, "-t", stdin=message("shell@localdomain", "echo one").as_bytes())
    assert one.returncode == 0
    match = SPOOLED.match(one.stderr)
    assert match and match.group(2).startswith(str(data / "spool" / "new")), one.stderr
    queue = mbox_bytes(message("shell@localdomain", "echo two"),
                       message("shell@localdomain", "echo three"))
    two = run_sendmail(config, stdin=queue)
    assert two.returncode == 0
    assert SPOOLED.match(two.stderr).group(3) == "2", two.stderr
    assert len(pending(data)) == 3
    for path in pending(data):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    with ServerProcess(config):
        wait_until(lambda: len(requests(data)) == 3, what="spooled mail delivered")
        assert requests(data) == ["echo one", "echo two", "echo three"]
        assert pending(data) == []
        wait_until(lambda: len(mbox_messages(data / "user@localdomain.mbox")) >= 6,
                   what="the shell's three replies")
    with ServerProcess(config):  # a second start delivers nothing again
        pass
    assert requests(data) == ["echo one", "echo two", "echo three"]


def test_server_down_still_refuses_what_the_server_would(tmp_path):
    config = sendmail_config(tmp_path)
    result = run_sendmail(config, "x@example.com", stdin=b"Subject: x\n\n")
    assert result.returncode == 67
    assert "relay denied, x@example.com is not in localdomain" in result.stderr
    result = run_sendmail(config, "-t", stdin=b"From: x@example.com\nTo: shell\n\n")
    assert result.returncode == 65  # the To header is unqualified
    result = run_sendmail(config, "shell", stdin=b"From: x@example.com\nSubject: x\n\n")
    assert result.returncode == 65
    assert "553 5.7.1 sender x@example.com is not in the local domain" in result.stderr
    assert pending(tmp_path / "data") == []


def test_write_spool_is_durable_and_stamps_a_message_id(tmp_path):
    raw = b"From: user@localdomain\r\nTo: swe1@localdomain\r\nSubject: hi\r\n\r\nbody\r\n"
    path = write_spool(tmp_path, raw, "user@localdomain", ["swe1@localdomain", "a@localdomain"])
    assert path.parent == tmp_path / "spool" / "new"
    assert list((tmp_path / "spool" / "tmp").iterdir()) == []
    entry = read_spool(path)
    assert entry.envelope_from == "user@localdomain"
    assert entry.rcpts == ["swe1@localdomain", "a@localdomain"]
    assert re.fullmatch(r"<\S+@localdomain>", entry.message_id)
    assert entry.raw.endswith(b"Subject: hi\n\nbody\n")
    # An existing Message-ID is kept; later files sort after earlier ones.
    kept = write_spool(tmp_path, b"Message-ID: <mine@x>\nSubject: b\n\n", "user@localdomain",
                       ["swe1@localdomain"])
    assert read_spool(kept).message_id == "<mine@x>"
    assert pending(tmp_path) == [path, kept]
    assert stat.S_IMODE((tmp_path / "spool").stat().st_mode) == 0o700


def test_spool_lock_is_exclusive(tmp_path):
    other = [sys.executable, "-c",  # another process, as sendmail and the server are
             "import sys; from pathlib import Path; from mailcoach_server.spool import "
             "spool_lock\nwith spool_lock(Path(sys.argv[1]), timeout=0.2) as had: "
             "sys.exit(0 if had else 3)", str(tmp_path)]
    with spool_lock(tmp_path) as first:
        assert first
        assert subprocess.run(other, timeout=30).returncode == 3
    assert subprocess.run(other, timeout=30).returncode == 0


async def test_deliver_skips_what_is_stored_and_sets_aside_what_is_refused(tmp_path):
    config = make_config(tmp_path)
    data = config.data_dir
    async with serve_in_process(config, smtp=False, imap=False) as server:
        # Cc only: remembered, nobody acts, so the trace holds just these messages.
        stored = message(None, "already here", Cc="notes@localdomain", Message_ID="<dup@test>")
        await server.engine.submit(stored.as_bytes(), origin="sendmail")
        write_spool(data, stored.as_bytes(), "user@localdomain", ["notes@localdomain"])
        write_spool(data, b"Subject: no sender\n\nbody\n", "user@localdomain",
                    ["notes@localdomain"])
        write_spool(data, message(None, "fresh", Cc="notes@localdomain").as_bytes(),
                    "user@localdomain", ["notes@localdomain"])
        (data / "spool" / "new" / "zzz-broken.eml").write_bytes(b"not a spool file\n")
        assert await deliver_spool(server.engine) == 1
        assert pending(data) == []
        subjects = [m["Subject"] for m in mbox_messages(data / "trace")]
        assert subjects == ["already here", "fresh"]
        failed = sorted(p.name for p in (data / "spool" / "failed").iterdir())
        assert len(failed) == 4 and "zzz-broken.eml" in failed
        reasons = [p.read_text() for p in (data / "spool" / "failed").glob("*.reason")]
        assert any("553 5.1.7 the From header must hold exactly one address" in r
                   for r in reasons)
        assert any("unreadable spool file" in r for r in reasons)
