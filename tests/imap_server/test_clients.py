"""Real mail clients from Debian against the server: mbsync (isync) and neomutt (in tmux)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.imap_server.conftest import ThreadedServer
from tests.support import make_config, wait_until

USER = "user@localdomain"


def mbsync_config(path: Path, server: ThreadedServer, local: Path) -> Path:
    host, port = server.server.imap_address
    path.write_text(f"""IMAPAccount mailcoach
Host {host}
Port {port}
User {USER}
Pass {server.password}
SSLType None
AuthMechs PLAIN

IMAPStore remote
Account mailcoach

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel mailcoach
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
""")
    return path


def run_mbsync(config: Path) -> str:
    result = subprocess.run([require_tool("mbsync"), "-c", str(config), "mailcoach"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def maildir_files(folder: Path) -> list[Path]:
    return sorted(p for sub in ("new", "cur") for p in (folder / sub).iterdir())


def test_mbsync_syncs_every_folder_both_ways(tmp_path):
    require_tool("mbsync")
    server = ThreadedServer(make_config(tmp_path)).start()
    try:
        server.send(b"From: user@localdomain\r\nTo: user@localdomain\r\nSubject: note to self"
                    b"\r\n\r\nremember the milk\r\n", [USER])
        client = server.imap()
        wait_until(lambda: client.status("INBOX", "(MESSAGES)")[1] == [b'"INBOX" (MESSAGES 1)'])
        local = tmp_path / "maildir"
        local.mkdir()
        config = mbsync_config(tmp_path / "mbsyncrc", server, local)
        run_mbsync(config)
        # every folder, the read-only ones included
        for folder in ("INBOX", "Sent", "Drafts", "Trash", "Trace", "Agents/swe1@localdomain"):
            assert (local / folder / "cur").is_dir(), folder
        [inbox_file] = maildir_files(local / "INBOX")
        assert b"remember the milk" in inbox_file.read_bytes()
        assert len(maildir_files(local / "Agents/swe1@localdomain")) == 4
        assert len(maildir_files(local / "Trace")) == 1
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
        run_mbsync(config)
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
        output = run_mbsync(config)
        files = maildir_files(local / "INBOX")
        assert len(files) == 2, output
        assert any(b"and eggs" in f.read_bytes() for f in files)
        first = next(f for f in files if b"remember the milk" in f.read_bytes())
        assert first.name.endswith(":2,S")
        # a third run changes nothing and fails nothing
        run_mbsync(config)
        assert len(maildir_files(local / "INBOX")) == 2
        client.logout()
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


def test_neomutt_reads_the_agents_reply_over_imap(tmp_path, model_server, tmux):
    neomutt = require_tool("neomutt")
    model_server.enqueue("To: user@localdomain\nSubject: Re: lunch\n\nPizza, says swe1.")
    server = ThreadedServer(make_config(tmp_path, model_server.spec())).start()
    try:
        server.send(b"From: user@localdomain\r\nTo: swe1@localdomain\r\nSubject: lunch\r\n\r\n"
                    b"What shall we eat?\r\n", ["swe1@localdomain"])
        client = server.imap()
        wait_until(lambda: client.status("INBOX", "(MESSAGES)")[1] == [b'"INBOX" (MESSAGES 1)'],
                   what="the agent's reply in INBOX")
        client.append("INBOX", None, None, b"From: shell@localdomain\r\nTo: user@localdomain\r\n"
                      b"Subject: unread\r\n\r\nnot opened\r\n")
        host, port = server.server.imap_address
        muttrc = tmp_path / "muttrc"
        muttrc.write_text(f"""set folder = "imap://{host}:{port}/"
set spoolfile = "+INBOX"
set imap_user = "{USER}"
set imap_pass = "{server.password}"
set ssl_starttls = no
set ssl_force_tls = no
set header_cache = ""
set message_cachedir = ""
set record = ""
set sort = date
set quit = yes
set move = no
set mark_old = yes
set wait_key = no
""")
        tmux.start(f"{neomutt} -n -F {muttrc}")
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
