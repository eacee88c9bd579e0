"""The worker's pure pieces: IMAP responses read, memory order, worker.yaml checked."""

from __future__ import annotations

import pytest
import yaml

from mailcoach_server.errors import ConfigError
from mailcoach_server.worker.entries import make_entry, memory_order, reply_message_id
from mailcoach_server.worker.fetch import parse_fetch, response_code, search_uids
from mailcoach_server.worker.settings import load_worker_settings

# As Dovecot 2.3 sent them to aioimaplib (a literal is the bytearray after its line).
FETCH = [b"1 FETCH (UID 7 FLAGS (\\Seen $MCDone) MODSEQ (12) BODY[] {5}", bytearray(b"hello"),
         b")", b"2 FETCH (FLAGS (\\Deleted))", b"Fetch completed (0.001 + 0.000 secs)."]


def test_fetch_lines_become_messages():
    [item] = parse_fetch(FETCH)  # the FETCH without UID (a flag change elsewhere) is skipped
    assert (item.uid, item.modseq, item.sections) == (7, 12, {"BODY[]": b"hello"})
    assert item.flags == {"\\Seen", "$MCDone"}


def test_response_codes_and_search_hits():
    lines = [b"[MODIFIED 1] Conditional store failed"]
    assert response_code(lines, "MODIFIED") == ["1"]
    assert response_code([b"[APPENDUID 17 4] Append completed."], "APPENDUID") == ["17", "4"]
    assert response_code([b"Store completed."], "MODIFIED") is None
    assert search_uids([b"4 2 9", b"Search completed."]) == [2, 4, 9]
    assert search_uids([b"", b"Search completed."]) == []


def test_reply_message_id_is_the_same_every_time_and_differs_by_party_and_uid():
    first = reply_message_id("swe1@company.example", 99, 3)
    assert first == reply_message_id("swe1@company.example", 99, 3)
    assert first != reply_message_id("swe2@company.example", 99, 3)
    assert first != reply_message_id("swe1@company.example", 100, 3)
    assert first.startswith("<") and first.endswith("@company.example>")


def entry(uid, sender, *, sent=False, answers="", date=""):
    raw = (f"From: {sender}\r\nTo: x@company.example\r\nSubject: s{uid}\r\n"
           f"Message-ID: <m{uid}{'s' if sent else ''}@x>\r\n"
           + (f"X-Mailcoach-Answers: {answers}\r\n" if answers else "") + "\r\nbody\r\n").encode()
    return make_entry(uid, raw, frozenset(), date, sent=sent)


def test_memory_order_puts_replies_after_what_they_answer_else_by_date():
    inbox = [entry(1, "user@x", date="01-Jan-2026 10:00:00 +0000"),
             entry(2, "shell@x", date="01-Jan-2026 10:05:00 +0000")]
    sent = [entry(1, "swe1@x", sent=True, answers="<m2@x>"),  # answers UID 2
            entry(2, "swe1@x", sent=True, date="01-Jan-2026 10:01:00 +0000")]  # a client's
    order = [(e.sent, e.uid) for e in memory_order(inbox, sent)]
    assert order == [(False, 1), (True, 2), (False, 2), (True, 1)]


def write(tmp_path, data, config=None):
    (tmp_path / "mailcoach.yaml").write_text(yaml.safe_dump(config or {
        "domain": "company.example", "user": "user@company.example",
        "agents": {"parties": {"swe1@localdomain": False}},
        "robots": {"shell@localdomain": None,
                   "shell@company.example": {"kind": "shell"}}}))
    (tmp_path / "secret").write_text("pw\n")
    base = {"config": "mailcoach.yaml", "imap": {"host": "127.0.0.1", "security": "none"},
            "smtp": {"host": "127.0.0.1", "security": "none"}}
    path = tmp_path / "worker.yaml"
    path.write_text(yaml.safe_dump({**base, **data}))
    return path


def test_settings_read_kinds_from_the_server_config(tmp_path):
    settings = load_worker_settings(write(tmp_path, {"parties": {
        "swe1@company.example": {"password_file": "secret"},
        "shell@company.example": {"password_file": "secret", "login": "shell"}}}))
    kinds = {p.address: (p.kind, p.login, p.password) for p in settings.parties}
    assert kinds == {"swe1@company.example": ("agent", "swe1@company.example", "pw"),
                     "shell@company.example": ("shell", "shell", "pw")}
    assert settings.imap.port == 143 and settings.smtp.port == 587  # the security's ports
    assert "pw" not in repr(settings.parties)


@pytest.mark.parametrize("parties, extra, problem", [
    ({"swe1@company.example": {"password_file": "secret", "kind": "shell"}}, {},
     "makes swe1@company.example 'agent'"),
    ({"swe1@company.example": {"password_env": "MAILCOACH_TEST_NO_SUCH_VARIABLE"}}, {},
     "MAILCOACH_TEST_NO_SUCH_VARIABLE is not set"),
    ({"swe1@elsewhere.example": {"password_file": "secret"}}, {}, "not an address in"),
    ({"user@company.example": {"password_file": "secret"}}, {}, "the human user"),
    ({"swe1@company.example": {"password_file": "secret"},
      "swe2@company.example": {"password_file": "secret"}}, {"max_connections": 1},
     "over the cap of 1"),
    ({"swe1@company.example": {"password_file": "secret"}}, {"leese_seconds": 3},
     "key 'leese_seconds': unknown key"),
])
def test_settings_errors_name_the_key(tmp_path, parties, extra, problem):
    with pytest.raises(ConfigError, match=problem.replace("$", r"\$").replace("'", ".")):
        load_worker_settings(write(tmp_path, {"parties": parties, **extra}))
