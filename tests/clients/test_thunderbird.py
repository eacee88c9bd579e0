"""Thunderbird 153 ESR (Debian) under Xvfb against ``mailcoach serve`` with the scripted model.

The account is written into a fresh profile (``user.js``; the password in
``logins.json``/``key4.db`` made with Thunderbird's own NSS), so the Account
Hub never opens and no password is asked. Thunderbird keeps IMAP messages for
offline use, so what it fetched is read from its own folder cache
(``ImapMail/127.0.0.1/<folder>``, mbox files); what it sent and asked for is
read from the server's debug log and store.
"""

from __future__ import annotations

from pathlib import Path

from tests.clients.desktop import Display, artifacts_dir, poll
from tests.clients.stack import ROUND_TRIP_OUTPUT, USER, MailStack
from tests.clients.thunderbird import Thunderbird, write_profile
from tests.conftest import require_tool
from tests.support import mbox_messages


def cached_bodies(folder_file: Path) -> list[bytes]:
    """The messages in one of Thunderbird's offline folder files (mbox)."""
    return [message.as_bytes() for message in mbox_messages(folder_file)]


def fetches_uid(command: str, uid: int) -> bool:
    """Whether an IMAP command line is a ``UID FETCH`` whose set includes ``uid``."""
    words = command.split()
    if len(words) < 3 or [w.lower() for w in words[:2]] != ["uid", "fetch"]:
        return False
    for piece in words[2].split(","):
        low, _, high = piece.partition(":")
        ends = (low, high or low)
        bounds = [10**9 if b == "*" else int(b) for b in ends if b.isdigit() or b == "*"]
        if len(bounds) == 2 and min(bounds) <= uid <= max(bounds):
            return True
    return False


def test_fetches_uid_reads_sequence_sets():
    assert fetches_uid("UID fetch 3:* (FLAGS)", 5)
    assert fetches_uid("uid FETCH 1,4:6 (UID)", 5)
    assert not fetches_uid("UID fetch 1:4 (FLAGS)", 5)
    assert not fetches_uid("fetch 5 (FLAGS)", 5)


def test_thunderbird_reads_sends_and_gets_the_agents_reply_by_idle(tmp_path):
    for tool in ("thunderbird", "Xvfb", "xdotool", "import"):
        require_tool(tool)
    with MailStack(tmp_path / "server") as stack, Display(tmp_path) as screen:
        stack.send(b"From: user@localdomain\r\nTo: user@localdomain\r\nSubject: note to self\r\n"
                   b"Message-ID: <milk@test>\r\n\r\nremember the milk\r\n", [USER])
        poll(lambda: stack.mbox(USER), 10, "the note in the user's mailbox")
        profile = tmp_path / "tb" / "profile"
        write_profile(profile, imap_port=stack.imap_port, smtp_port=stack.smtp_port,
                      password=stack.password)
        # the main window and, from the command line, a compose window
        thunderbird = Thunderbird(screen, profile).start(
            "-mail", "-compose",
            "to=swe1@localdomain,subject=thunderbird question,body=Please ask the shell.")
        try:
            # logged in with the saved password (no prompt), listed, downloaded INBOX
            poll(lambda: "user@localdomain logged in" in stack.log(), 90, "Thunderbird's login")
            poll(lambda: any(c.lower().startswith("list") for c in stack.imap_commands()), 60,
                 "Thunderbird to list the folders")
            inbox = thunderbird.imap_dir() / "INBOX"
            [note] = poll(lambda: cached_bodies(inbox), 90, "INBOX in Thunderbird's cache")
            assert b"remember the milk" in note
            for folder in ("Sent.msf", "Drafts.msf", "Trash.msf", "Trace.msf",
                           "Agents.sbd/swe1@localdomain.msf"):
                poll(lambda f=folder: (thunderbird.imap_dir() / f).is_file(), 60,
                     f"Thunderbird's {folder}")

            # send the message composed from the command line: Ctrl+Return
            [window] = poll(lambda: screen.windows("Write: thunderbird question"), 60,
                            "the compose window")
            screen.keys(window, "ctrl+Return")

            def question():
                return [m for m in stack.mbox("swe1@localdomain")
                        if m["Subject"] == "thunderbird question"]
            [sent] = poll(question, 60, "Thunderbird's message in swe1's memory")
            assert "Thunderbird" in (sent["User-Agent"] or "")
            assert "235 2.7.0 Authentication successful" in stack.log()  # SMTP AUTH
            assert "AUTH PLAIN" in stack.log()

            # the agent asks the shell and answers; IDLE brings the reply to Thunderbird
            def reply():
                return [m for m in stack.mbox(USER) if m["In-Reply-To"] == sent["Message-ID"]]
            [answer] = poll(reply, 60, "the agent's reply after the shell round trip")
            assert ROUND_TRIP_OUTPUT in answer.get_payload()
            assert "IDLE" in stack.imap_commands()
            # IDLE told Thunderbird, and it fetched the new message with no one clicking.
            # (Its offline copy of the body follows on its own schedule, not always soon.)
            uid = stack.uid_of("INBOX", answer["Message-ID"])
            poll(lambda: any(fetches_uid(c, uid) for c in stack.imap_commands()), 90,
                 f"Thunderbird to fetch the reply (UID {uid}) after IDLE")

            # Thunderbird's copy in Sent matched the one the router filed: stored once
            poll(lambda: "APPEND completed: already in Sent" in stack.log(), 60,
                 "Thunderbird's Sent copy")
            sent_ids = stack.folder_message_ids("Sent")
            assert sent_ids.count(sent["Message-ID"]) == 1, sent_ids
            screen.screenshot(artifacts_dir() / "thunderbird.png")
        finally:
            thunderbird.quit()
        assert stack.errors() == []


def build_log(lines: int = 1300) -> str:
    """A 50 KB build log whose verdict is at its end, as logs have it."""
    body = [f"step {n:04d}: compiling module_{n:04d}.c ok" for n in range(1, lines)]
    return "\n".join([*body, "ERROR: linker: undefined reference to `frobnicate'"]) + "\n"


def test_a_log_attached_in_thunderbird_reaches_the_model_inline(tmp_path):
    for tool in ("thunderbird", "Xvfb", "xdotool"):
        require_tool(tool)
    log_file = tmp_path / "build.log"
    log_file.write_text(build_log())
    assert 45_000 < log_file.stat().st_size < 60_000
    seen: list[str] = []

    def model(body):  # answers about what it was shown of the attachment
        last = str(body["messages"][-1]["content"])
        seen.append(last)
        verdict = "frobnicate" if "undefined reference to `frobnicate'" in last else "nothing"
        return f"To: {USER}\nSubject: about your log\n\nThe link failed: {verdict}.\n"

    with MailStack(tmp_path / "server") as stack, Display(tmp_path) as screen:
        stack.model.responder = model
        profile = tmp_path / "tb" / "profile"
        write_profile(profile, imap_port=stack.imap_port, smtp_port=stack.smtp_port,
                      password=stack.password)
        thunderbird = Thunderbird(screen, profile).start(
            "-compose", f"to=swe1@localdomain,subject=why did my build fail,"
                        f"body=See the log.,attachment='{log_file.as_uri()}'")
        try:
            [window] = poll(lambda: screen.windows("Write: why did my build fail"), 90,
                            "the compose window")
            screen.keys(window, "ctrl+Return")

            def answer():
                return [m for m in stack.mbox(USER) if m["Subject"] == "about your log"]
            [reply] = poll(answer, 90, "the agent's answer about the log")
        finally:
            thunderbird.quit()
    assert "The link failed: frobnicate." in reply.get_payload()
    shown = seen[-1]
    assert "[attachment: build.log" in shown and "step 0001: compiling" in shown
    assert "lines skipped ---" in shown and "[end of build.log]" in shown
    assert len(shown) < 25_000  # cut to limits.attachment_text, not 50 KB
