"""No single message stops a party, a worker or the store; a full disk is survived.

Real SMTP (aiosmtplib) into an in-process server, the real shell robot, and
a real full disk: a small tmpfs mounted for the test (root only; outside CI
the test is skipped without it, in CI it fails).
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from mailcoach_server.config import load_config
from mailcoach_server.mailtext import TOO_DEEP
from mailcoach_server.store.store import MessageMeta, Store, WritePlan
from tests.conftest import IN_CI
from tests.support import (
    config_data,
    make_config,
    mbox_messages,
    serve_in_process,
    wait_for,
    write_config,
)

USER = "user@localdomain"
SHELL = "shell@localdomain"


def deep_mime(levels: int, subject: str) -> bytes:
    """A message whose multipart/mixed parts nest ``levels`` deep around one text part."""
    head = (f"From: {USER}\nTo: {SHELL}\nSubject: {subject}\nMIME-Version: 1.0\n"
            f"Message-ID: <deep.{levels}.{time.time_ns()}@localdomain>\n").encode()
    opening = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (i, i)
                       for i in range(levels))
    closing = b"".join(b"\n--b%d--\n" % i for i in reversed(range(levels)))
    return head + opening + b"Content-Type: text/plain\n\ndeep stdin\n" + closing


def command(subject: str, to: str = SHELL) -> EmailMessage:
    message = EmailMessage()
    message["From"] = USER
    message["To"] = to
    message["Subject"] = subject
    message.set_content("")
    return message


async def send_code(server, message: EmailMessage | bytes, rcpts: list[str] | None = None
                    ) -> tuple[int, str]:
    """The SMTP reply to the whole transaction: (code, text)."""
    host, port = server.smtp_address
    kwargs = {"hostname": host, "port": port, "start_tls": False, "use_tls": False,
              "username": USER, "password": server.credentials.password}
    try:
        if isinstance(message, bytes):
            responses, text = await aiosmtplib.send(message, sender=USER, recipients=rcpts,
                                                    **kwargs)
        else:
            responses, text = await aiosmtplib.send(message, **kwargs)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        return exc.recipients[0].code, exc.recipients[0].message
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code, exc.message
    return 250, text


def answers(data_dir: Path, subject_prefix: str = "Exit Code") -> list:
    return [m for m in mbox_messages(data_dir / "user@localdomain.mbox")
            if m["From"] != USER and str(m["Subject"]).startswith(subject_prefix)]


# -- one message cannot silence a party ------------------------------------------


async def test_absurd_mime_nesting_is_refused_and_the_shell_goes_on(tmp_path):
    config = make_config(tmp_path)
    async with serve_in_process(config) as server:
        code, text = await send_code(server, deep_mime(2000, "echo too deep"), [SHELL])
        assert code == 554 and text.startswith("5.6.0"), (code, text)
        # Deep but under the limit: accepted, answered, the model/robot view cut at 50.
        code, _ = await send_code(server, deep_mime(80, "cat"), [SHELL])
        assert code == 250
        first = await wait_for(lambda: answers(config.data_dir), what="the shell's answer")
        assert first[0]["Subject"] == "Exit Code: 0"
        assert (await send_code(server, command("echo after")))[0] == 250
        replies = await wait_for(lambda: len(answers(config.data_dir)) == 2 and
                                 answers(config.data_dir), what="the next command answered")
        assert "after" in replies[1].get_payload()


def plant(data_dir: Path, raws: list[bytes]) -> None:
    """Messages pending for the shell, as an older version (no nesting limit) stored them."""
    async def write() -> None:
        store = Store.open(data_dir)
        try:
            plans = []
            for raw in raws:
                number = store.allocate_message_id()
                mid = f"<planted.{number}@localdomain>"
                raw = raw.replace(b"Subject:", f"Message-ID: {mid}\nSubject:".encode(), 1)
                meta = MessageMeta(number, mid, USER, (SHELL,), "planted", "", mid, 0, 0.0,
                                   time.time())
                # Only the shell remembers it: the test reads the user's mbox with the
                # stdlib, which cannot parse 2,000 levels either.
                plan = WritePlan(raw=raw, meta=meta, memory_appends=[SHELL],
                                 deliveries=[(SHELL, None)], folders=[])
                if not plans:
                    plan.party_states[SHELL] = ("robot", {})
                plans.append(plan)
            await store.commit_many(plans)
        finally:
            await store.aclose()
    return write()


async def test_a_stored_2000_level_message_is_answered_and_so_is_the_next_after_restart(
        tmp_path):
    config = make_config(tmp_path)
    config.data_dir.mkdir(parents=True)
    await plant(config.data_dir, [deep_mime(2000, "echo deep"),
                                  command("echo next").as_bytes()])
    async with serve_in_process(config) as server:
        replies = await wait_for(lambda: len(answers(config.data_dir)) >= 2 and
                                 answers(config.data_dir), what="both planted deliveries")
        # The reply and "done" commit together (the mbox view is written just before).
        await wait_for(lambda: server.store.pending_count() == 0, what="both done")
    # The deep one ran on what could be read (its Subject); its stdin says why it is short.
    assert [r["In-Reply-To"] for r in replies] == ["<planted.1@localdomain>",
                                                   "<planted.2@localdomain>"]
    assert "next" in replies[1].get_payload()
    # And after a restart, nothing is pending and a new command is answered.
    async with serve_in_process(config) as server:
        assert server.store.pending_count() == 0
        code, _ = await send_code(server, command("echo restarted"))
        assert code == 250
        later = await wait_for(lambda: len(answers(config.data_dir)) == 3 and
                               answers(config.data_dir), what="a command after the restart")
        assert "restarted" in later[2].get_payload()


def test_the_read_view_cuts_deep_parts_into_a_note():
    from mailcoach_server.mailtext import parse_message, read_message, text_of

    for reader in (parse_message, read_message):
        assert text_of(reader(deep_mime(10, "x"))).strip() == "deep stdin"
        assert text_of(reader(deep_mime(80, "x"))).strip() == TOO_DEEP
        too_deep = reader(deep_mime(3000, "x"))  # past the interpreter's stack: headers only
        assert too_deep["Subject"] == "x" and text_of(too_deep).strip() == TOO_DEEP


# -- one failing write fails that message alone ---------------------------------


async def test_a_write_that_fails_fails_that_message_alone(tmp_path):
    config = make_config(tmp_path)
    async with serve_in_process(config) as server:
        data_dir = config.data_dir
        # A directory where the victim's mbox would go: every append to it fails (EISDIR).
        blocker = data_dir / "victim@localdomain.mbox"
        blocker.mkdir()
        note = (f"From: {USER}\nTo: {USER}\nSubject: note %d\n\nbody\n")
        code, text = await send_code(server, (note % 1).encode(), [USER, "victim@localdomain"])
        assert code == 451, (code, text)
        for number in (2, 3):  # the writer goes on: the next messages are accepted
            assert (await send_code(server, (note % number).encode(), [USER]))[0] == 250
        blocker.rmdir()
        assert (await send_code(server, (note % 4).encode(), [USER, "victim@localdomain"])
                )[0] == 250
    subjects = [m["Subject"] for m in mbox_messages(data_dir / "trace")
                if str(m["Subject"]).startswith("note")]
    assert subjects == ["note 2", "note 3", "note 4"]  # nothing refused kept, nothing lost
    assert [m["Subject"] for m in mbox_messages(data_dir / "victim@localdomain.mbox")] == [
        "note 4"]
    store = Store.open(data_dir)  # and the index agrees with the files after a reopen
    try:
        assert [store.read(n)[1].subject for n in store.parties[USER].memory
                if store.read(n)[1].subject.startswith("note")] == subjects
    finally:
        await store.aclose()


# -- a full disk ------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(path: Path, size: str = "4m"):
    path.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                             str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        why = f"cannot mount a tmpfs for a real full disk: {result.stderr.strip()}"
        if IN_CI:
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> Path:
    """Write a file until the disk is full (not a byte left); returns it."""
    filler = path / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while f.write(b"\0" * size):
                    pass
    with pytest.raises(OSError) as full, open(path / "probe", "wb", buffering=0) as f:
        f.write(b"\0" * 4096)
    assert full.value.errno == errno.ENOSPC
    return filler


async def test_disk_full_gets_451_then_mail_is_accepted_again_without_restart(tmp_path,
                                                                              caplog):
    with small_disk(tmp_path / "disk") as disk:
        config = load_config(write_config(tmp_path / "mailcoach.yaml",
                                          config_data(disk / "data")))
        async with serve_in_process(config) as server:
            accepted: list[str] = []
            body = ("x" * 70 + "\n") * 30

            async def mail(subject: str) -> int:
                raw = f"From: {USER}\nTo: {USER}\nSubject: {subject}\n\n{body}\n".encode()
                code, _ = await send_code(server, raw, [USER])
                if code == 250:
                    accepted.append(subject)
                return code

            assert await mail("before") == 250
            # A command accepted before the disk fills, answered while it is full.
            hold = config.data_dir / "work" / "hold"
            hold.parent.mkdir(exist_ok=True)
            hold.touch()
            waiting = command("while [ -e hold ]; do sleep 0.05; done; echo late")
            assert (await send_code(server, waiting))[0] == 250
            accepted.append(str(waiting["Subject"]))
            filler = fill(disk)
            hold.unlink()
            await wait_for(lambda: any("mailbox refused a write" in r.getMessage()
                                       for r in caplog.records),
                           what="the shell's reply refused by the full disk")
            codes = [await mail(f"full {n}") for n in range(5)]
            assert codes == [451] * 5
            os.unlink(filler)
            assert await mail("after") == 250  # no restart
            late = await wait_for(lambda: answers(config.data_dir), timeout=60,
                                  what="the shell's reply, once there is space")
            assert "late" in late[0].get_payload()
            accepted.append(str(late[0]["Subject"]))
            for n in range(20):
                assert await mail(f"more {n}") == 250
        trace = [m["Subject"] for m in mbox_messages(config.data_dir / "trace")
                 if m["From"] == USER or m["From"] == SHELL]
        assert sorted(trace) == sorted(accepted)  # the late reply lands among the "more"
        store = Store.open(config.data_dir)
        try:
            memory = [store.read(n)[1].subject for n in store.parties[USER].memory]
            assert sorted(memory) == sorted(accepted)
        finally:
            await store.aclose()


# -- private files ------------------------------------------------------------------


async def test_the_data_dir_is_0700_and_its_files_0600(tmp_path, model_server):
    config = make_config(tmp_path, model=model_server.spec())
    model_server.enqueue(f"To: {USER}\nSubject: again\n\nregenerated")
    old_umask = os.umask(0o022)
    try:
        async with serve_in_process(config) as server:
            await send_code(server, command("echo hi"))
            await wait_for(lambda: answers(config.data_dir), what="the shell's answer")
            # A rollback rewrites a party file (temp file + rename): still 0600.
            # With X-Drop the agent answers again from what is left (the original's meaning).
            rollback = (f"From: {USER}\nTo: swe1@localdomain\nX-Drop: yes\n"
                        "X-Rollback: 0\nSubject: r\n\nx\n").encode()
            code, _ = await send_code(server, rollback, ["swe1@localdomain"])
            assert code == 250
            await wait_for(lambda: answers(config.data_dir, "again"), what="the regenerated answer")
    finally:
        os.umask(old_umask)
    assert config.data_dir.stat().st_mode & 0o777 == 0o700
    files = [p for p in config.data_dir.iterdir() if p.is_file()]
    names = {p.name for p in files}
    assert {"trace", "index.sqlite", "login", "lock", "user@localdomain.mbox",
            "shell@localdomain.mbox", "swe1@localdomain.mbox"} <= names
    loose = {p.name: oct(p.stat().st_mode & 0o777) for p in files
             if p.stat().st_mode & 0o077}
    assert loose == {}


async def test_loose_modes_left_by_an_older_version_are_tightened(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)
    store = Store.open(data_dir)
    await store.aclose()
    for name in ("trace", "swe1@localdomain.mbox"):
        (data_dir / name).touch()
        os.chmod(data_dir / name, 0o644)
    os.chmod(data_dir / "index.sqlite", 0o644)
    store = Store.open(data_dir)
    await store.aclose()
    assert data_dir.stat().st_mode & 0o777 == 0o700
    for name in ("trace", "swe1@localdomain.mbox", "index.sqlite", "lock"):
        assert (data_dir / name).stat().st_mode & 0o777 == 0o600, name
