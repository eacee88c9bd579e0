"""Real mail clients from Debian against the server: mbsync (isync) and neomutt (in tmux).

Their configs are the README's snippets ("Reading mail in a mail client"), read
from it: only the ports are the test's. ``HOME`` is the test's directory and the
data directory is ``~/mailcoach-data``, so the README's ``cat ~/mailcoach-data/login``
and ``~/Mail/mailcoach`` work as written.
"""

from __future__ import annotations

import os
import subprocess
import time
from email.utils import parseaddr
from pathlib import Path

import pytest

from mailcoach_server.config import load_config
from tests.clients.readme import snippet, with_ports
from tests.conftest import require_tool
from tests.imap_server.conftest import ThreadedServer
from tests.support import config_data, mbox_messages, wait_until, write_config

USER = "user@localdomain"


def readme_server(home: Path, model: str | None = None) -> ThreadedServer:
    """A server whose data directory is where the README's snippets look: ~/mailcoach-data."""
    path = write_config(home / "mailcoach.yaml", config_data(home / "mailcoach-data", model))
    return ThreadedServer(load_config(path)).start()


def home_env(home: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(home)}


def mbsync_config(home: Path, server: ThreadedServer) -> Path:
    _, port = server.server.imap_address
    path = home / ".mbsyncrc"
    path.write_text(with_ports(snippet("mbsync"), imap=port))
    return path


def run_mbsync(home: Path, *, ok: bool = True) -> str:
    """``mbsync mailcoach`` as the README says (it reads ~/.mbsyncrc)."""
    result = subprocess.run([require_tool("mbsync"), "mailcoach"], capture_output=True,
                            text=True, timeout=60, env=home_env(home))
    assert (result.returncode == 0) == ok, result.stdout + result.stderr
    return result.stdout + result.stderr


def maildir_files(folder: Path) -> list[Path]:
    return sorted(p for sub in ("new", "cur") for p in (folder / sub).iterdir())


def test_mbsync_syncs_every_folder_both_ways(tmp_path):
    require_tool("mbsync")
    server = readme_server(tmp_path)
    try:
        server.send(b"From: user@localdomain\r\nTo: user@localdomain\r\nSubject: note to self"
                    b"\r\n\r\nremember the milk\r\n", [USER])
        client = server.imap()
        wait_until(lambda: client.status("INBOX", "(MESSAGES)")[1] == [b'"INBOX" (MESSAGES 1)'])
        mbsync_config(tmp_path, server)
        # as the README warns: without the local directory the first run fails
        assert "cannot open store" in run_mbsync(tmp_path, ok=False)
        [mkdir] = snippet("mbsync", 1).splitlines()
        subprocess.run(["sh", "-c", mkdir], check=True, env=home_env(tmp_path), timeout=20)
        local = tmp_path / "Mail" / "mailcoach"
        assert local.is_dir()
        run_mbsync(tmp_path)
        # every folder of the user's; the read-only views are left out by the README's
        # Patterns (a Maildir cannot refuse a delete: mbsync would drop locally what the
        # server keeps)
        for folder in ("INBOX", "Sent", "Drafts", "Trash"):
            assert (local / folder / "cur").is_dir(), folder
        assert not (local / "Trace").exists() and not (local / "Agents").exists()
        [inbox_file] = maildir_files(local / "INBOX")
        assert b"remember the milk" in inbox_file.read_bytes()
        [sent_file] = maildir_files(local / "Sent")
        assert sent_file.name.endswith(",S")  # the router files sent mail as \Seen
        # a flag set locally reaches the server
        cur = local / "INBOX" / "cur"
        base = inbox_file.name.split(":2,")[0]
        inbox_file.rename(cur / f"{base}:2,FS")
        # a message written locally (a draft) is uploaded
        draft = local / "Drafts" / "new" / "1700000000.1.local"
        draft.write_bytes(b"From: user@localdomain\nTo: swe1@localdomain\nSubject: draft\n"
                          b"\nlater\n")
        # and a folder made locally appears on the server
        for sub in ("cur", "new", "tmp"):
            (local / "Projects" / sub).mkdir(parents=True)
        run_mbsync(tmp_path)
        client.select("INBOX", readonly=True)
        assert client.fetch("1", "(FLAGS)")[1] == [b"1 (FLAGS (\\Flagged \\Seen))"]
        client.select("Drafts", readonly=True)
        typ, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert data[0][1] == b"Subject: draft\r\n\r\n"
        assert any(b'"Projects"' in line for line in client.list()[1])
        # a message on the server reaches the local copy
        server.send(b"From: user@localdomain\r\nTo: user@localdomain\r\nSubject: second\r\n"
                    b"\r\nand eggs\r\n", [USER])
        wait_until(lambda: client.status("INBOX", "(MESSAGES)")[1] == [b'"INBOX" (MESSAGES 2)'])
        client.select("INBOX")
        client.store("1", "-FLAGS", r"(\Flagged)")  # and a flag removed on the server
        output = run_mbsync(tmp_path)
        files = maildir_files(local / "INBOX")
        assert len(files) == 2, output
        assert any(b"and eggs" in f.read_bytes() for f in files)
        first = next(f for f in files if b"remember the milk" in f.read_bytes())
        assert first.name.endswith(":2,S")
        # a third run changes nothing and fails nothing
        run_mbsync(tmp_path)
        assert len(maildir_files(local / "INBOX")) == 2
        client.logout()
    finally:
        server.stop()


def test_mbsync_edits_an_agents_memory_from_the_maildir(tmp_path, model_server):
    """The README's memory channel: delete and add files locally, sync, the agent's next
    model call sees exactly the synced folder."""
    require_tool("mbsync")
    server = readme_server(tmp_path, model_server.spec())
    try:
        config = mbsync_config(tmp_path, server)
        config.write_text(config.read_text() + "\n" + snippet("mbsync", 2))
        (tmp_path / "Mail" / "mailcoach").mkdir(parents=True)
        client = server.imap()
        for n in ("one", "two"):
            assert client.append('"Agents/swe1@localdomain"', None, None,
                                 f"From: user@localdomain\r\nTo: swe1@localdomain\r\n"
                                 f"Subject: lesson {n}\r\n\r\nlesson body {n}\r\n".encode()
                                 )[0] == "OK"
        run = subprocess.run([require_tool("mbsync"), "mailcoach-memories"], capture_output=True,
                             text=True, timeout=60, env=home_env(tmp_path))
        assert run.returncode == 0, run.stdout + run.stderr
        local = tmp_path / "Mail" / "mailcoach" / "Agents" / "swe1@localdomain"
        store = server.server.store
        memory = list(store.parties["swe1@localdomain"].memory)
        files = maildir_files(local)
        assert len(files) == len(memory) >= 2
        [gone] = [f for f in files if b"lesson body one" in f.read_bytes()]
        gone.unlink()
        (local / "new" / "1700000000.1.teacher").write_bytes(
            b"From: user@localdomain\nTo: swe1@localdomain\nSubject: taught locally\n"
            b"Message-ID: <taught@local>\n\nThe answer is always 42.\n")
        run = subprocess.run([require_tool("mbsync"), "mailcoach-memories"], capture_output=True,
                             text=True, timeout=60, env=home_env(tmp_path))
        assert run.returncode == 0, run.stdout + run.stderr
        after = store.parties["swe1@localdomain"].memory
        assert memory[-2] not in after and len(after) == len(memory)
        assert store.meta(after[-1]).subject == "taught locally"
        model_server.enqueue("To: user@localdomain\nSubject: Re: q\n\n42")
        server.send(b"From: user@localdomain\r\nTo: swe1@localdomain\r\nSubject: q\r\n\r\n"
                    b"what is the answer?\r\n", ["swe1@localdomain"])
        wait_until(lambda: model_server.requests, what="the model call")
        seen = "\n".join(str(m["content"]) for m in model_server.requests[-1]["messages"])
        assert "The answer is always 42." in seen and "lesson body two" in seen
        assert "lesson body one" not in seen
    finally:
        server.stop()


class Tmux:
    """A private tmux server (own socket) running one program in a fixed-size window."""

    def __init__(self, socket: Path, env: dict[str, str]) -> None:
        self.tmux = require_tool("tmux")
        self.socket = socket
        self.env = env

    def run(self, *args: str) -> str:
        result = subprocess.run([self.tmux, "-S", str(self.socket), *args], capture_output=True,
                                text=True, env=self.env, timeout=20)
        return result.stdout

    def start(self, command: str) -> None:
        self.run("new-session", "-d", "-x", "160", "-y", "40", command)

    def screen(self) -> str:
        return self.run("capture-pane", "-p")

    def wait_for(self, text: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never showed; the screen:\n{self.screen()}")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", *keys)

    def kill(self) -> None:
        self.run("kill-server")


@pytest.fixture
def tmux(tmp_path):
    require_tool("tmux")
    session = Tmux(tmp_path / "tmux.sock", {**os.environ, "TERM": "xterm", "HOME": str(tmp_path)})
    try:
        yield session
    finally:
        session.kill()


#: settings for the test's screen only, after the README's: no caches, no questions
_NEOMUTT_TEST_ONLY = """set header_cache = ""
set message_cachedir = ""
set sort = date
set quit = yes
set move = no
set mark_old = yes
set wait_key = no
"""


def neomuttrc(home: Path, server: ThreadedServer, *, drop: str = "") -> Path:
    """``~/.neomuttrc``: the README's snippet (less any line starting with ``drop``)."""
    (_, imap_port), (_, smtp_port) = server.server.imap_address, server.server.smtp_address
    lines = with_ports(snippet("neomutt"), imap=imap_port, smtp=smtp_port).splitlines()
    kept = [line for line in lines if not (drop and line.startswith(drop))]
    assert len(kept) == len(lines) - (1 if drop else 0), f"README's neomutt has no {drop!r}"
    path = home / ".neomuttrc"
    path.write_text("\n".join(kept) + "\n" + _NEOMUTT_TEST_ONLY)
    return path


def test_neomutt_reads_the_agents_reply_over_imap(tmp_path, model_server, tmux):
    neomutt = require_tool("neomutt")
    model_server.enqueue("To: user@localdomain\nSubject: Re: lunch\n\nPizza, says swe1.")
    server = readme_server(tmp_path, model_server.spec())
    try:
        server.send(b"From: user@localdomain\r\nTo: swe1@localdomain\r\nSubject: lunch\r\n\r\n"
                    b"What shall we eat?\r\n", ["swe1@localdomain"])
        client = server.imap()
        wait_until(lambda: client.status("INBOX", "(MESSAGES)")[1] == [b'"INBOX" (MESSAGES 1)'],
                   what="the agent's reply in INBOX")
        client.append("INBOX", None, None, b"From: shell@localdomain\r\nTo: user@localdomain\r\n"
                      b"Subject: unread\r\n\r\nnot opened\r\n")
        neomuttrc(tmp_path, server)
        tmux.start(f"{neomutt} -n")  # -n: no system config; ~/.neomuttrc is the README's
        tmux.wait_for("Re: lunch")
        tmux.keys("Enter")  # the first message: the agent's reply
        screen = tmux.wait_for("Pizza, says swe1.")
        assert "From: swe1@localdomain" in screen
        assert "In-Reply-To: <" in screen  # -n: no header weeding; the reply is threaded
        tmux.keys("q")
        tmux.wait_for("unread")
        tmux.keys("q")  # leaving marks the unread one Old, a keyword neomutt stores
        client.select("INBOX", readonly=True)
        wait_until(lambda: client.fetch("1:2", "(FLAGS)")[1] == [
            b"1 (FLAGS (\\Seen))", b"2 (FLAGS (Old))"], what="flags from neomutt")
        client.logout()
    finally:
        server.stop()


def test_neomutt_sends_with_the_readme_config_and_files_sent_once(tmp_path, model_server):
    neomutt = require_tool("neomutt")
    model_server.enqueue("To: user@localdomain\nSubject: Re: from neomutt\n\nGot it.")
    server = readme_server(tmp_path, model_server.spec())
    try:
        def send(subject: str) -> subprocess.CompletedProcess[str]:
            # batch mode (stdin is not a terminal): neomutt sends at once over smtp_url
            return subprocess.run([neomutt, "-n", "-s", subject, "swe1@localdomain"],
                                  input="sent from neomutt\n", capture_output=True, text=True,
                                  timeout=60, env={**home_env(tmp_path), "TERM": "xterm"})

        # what the issue saw: without `from` neomutt sends as root@host, refused
        neomuttrc(tmp_path, server, drop="set from")
        refused = send("no from")
        assert refused.returncode != 0
        assert "553" in refused.stdout + refused.stderr
        neomuttrc(tmp_path, server)
        result = send("from neomutt")
        assert result.returncode == 0, result.stdout + result.stderr
        data = tmp_path / "mailcoach-data"
        memory = wait_until(lambda: [m for m in mbox_messages(data / "swe1@localdomain.mbox")
                                     if m["Subject"] == "from neomutt"], what="neomutt's mail")
        assert [m["Subject"] for m in mbox_messages(data / "swe1@localdomain.mbox")
                if m["Subject"] == "no from"] == []
        assert parseaddr(memory[0]["From"])[1] == USER
        # record = "+Sent": neomutt APPENDs its copy; the server keeps one
        client = server.imap()
        client.select("Sent", readonly=True)
        typ, data_ = client.search(None, "HEADER", "Message-ID", memory[0]["Message-ID"])
        assert typ == "OK" and len(data_[0].split()) == 1, data_
        wait_until(lambda: [m for m in mbox_messages(data / "user@localdomain.mbox")
                            if m["Subject"] == "Re: from neomutt"], what="swe1's answer")
        client.logout()
    finally:
        server.stop()


# -- read-only views (Trace, a non-agent's Agents/<address>) as clients delete in them -------


def test_deleting_in_a_read_only_view_is_refused_before_anything_changes(threaded):
    """What claws-mail and Thunderbird do to delete: COPY (or MOVE) to Trash, then \\Deleted.

    In a view nothing may be deleted, so the first step is refused: no stray copy
    is left in Trash. Copying to a folder of one's own still works. (An agent's
    folder is its memory and editable: tests/imap_server/test_memory_edits.py.)
    """
    from tests.imap_server.test_compliance import Wire, mail

    threaded.send(mail("kept", From=USER, To=USER), [USER])
    wire = Wire(threaded)
    try:
        wait_until(lambda: b"MESSAGES 1" in b"".join(wire.ok(b"STATUS Trace (MESSAGES)")))
        wire.ok(b"CREATE Keep")
        for view in (b"Trace", b'"Agents/user@localdomain"'):
            lines = wire.ok(b"SELECT " + view)
            assert any(b"[PERMANENTFLAGS ()]" in line for line in lines), lines
            assert wire.command(b"UID COPY 1:* Trash")[1].startswith(b"NO [CANNOT]")
            assert wire.command(b"UID MOVE 1:* Trash")[1].startswith(b"NO")
            assert wire.command(b"UID STORE 1:* +FLAGS (\\Deleted)")[1].startswith(b"NO")
            wire.ok(b"UID COPY 1:* Keep")  # keeping a copy elsewhere is fine
        assert b"MESSAGES 0" in b"".join(wire.ok(b"STATUS Trash (MESSAGES)"))
        assert b"MESSAGES 1" in b"".join(wire.ok(b"STATUS Trace (MESSAGES)"))
        assert b"MESSAGES 2" in b"".join(wire.ok(b"STATUS Keep (MESSAGES)"))  # once each
    finally:
        wire.close()


@pytest.mark.parametrize("select", [True, False], ids=["selected", "authenticated"])
def test_a_quiet_idle_gets_ok_keepalives(threaded, monkeypatch, select):
    """RFC 2177: the server may send ``* OK`` during IDLE; clients and NAT keep the link."""
    from mailcoach_server.imap import session
    from tests.imap_server.test_compliance import Wire

    monkeypatch.setattr(session, "IDLE_KEEPALIVE", 0.2)  # 2 minutes in use
    wire = Wire(threaded)
    try:
        if select:
            wire.ok(b"SELECT INBOX")
        wire.sock.sendall(b"i1 IDLE\r\n")
        assert wire.line().startswith(b"+ ")
        assert [wire.line(), wire.line()] == [b"* OK still here", b"* OK still here"]
        wire.sock.sendall(b"DONE\r\n")
        while not (line := wire.line()).startswith(b"i1 "):
            assert line == b"* OK still here", line
        assert line.startswith(b"i1 OK")
        wire.ok(b"NOOP")  # the session goes on
    finally:
        wire.close()
