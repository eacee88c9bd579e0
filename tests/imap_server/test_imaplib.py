"""Every IMAP command and its error cases, with the stdlib client against a real server."""

from __future__ import annotations

import base64
import imaplib
import re
import time

import pytest

from tests.imap_server.conftest import ThreadedServer
from tests.support import make_config, wait_until

USER = "user@localdomain"
SAMPLE = (
    b"From: Swe One <swe1@localdomain>\r\n"
    b"To: user@localdomain\r\n"
    b"Subject: =?utf-8?q?caf=C3=A9?= report\r\n"
    b"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
    b"Message-ID: <sample-1@localdomain>\r\n"
    b"X-Note: hello\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"The numbers are in.\r\n"
    b"--b1\r\n"
    b"Content-Type: application/octet-stream; name=data.bin\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAEC\r\n"
    b"--b1--\r\n"
)


def message(subject: str, body: str = "body", sender: str = "swe1@localdomain",
            message_id: str | None = None, **headers: str) -> bytes:
    message_id = message_id or "<" + subject.replace(" ", ".") + "@localdomain>"
    lines = [f"From: {sender}", f"To: {USER}", f"Subject: {subject}",
             f"Message-ID: {message_id}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode()


def ok(result):
    typ, data = result
    assert typ == "OK", data
    return data


def code(client: imaplib.IMAP4, name: str) -> bytes:
    return client.untagged_responses.get(name, [b""])[-1]


def raw(client: imaplib.IMAP4, line: bytes) -> bytes:
    """Send a line imaplib would refuse to send (wrong state); return the tagged answer."""
    client.send(b"r1 " + line + b"\r\n")
    while not (answer := client.readline()).startswith(b"r1 "):
        pass
    return answer.rstrip(b"\r\n")


def fetch_map(data) -> dict[int, bytes]:
    """``* n FETCH (...)`` responses as {n: the response with literals inlined}."""
    out, current = {}, None
    for item in data:
        if isinstance(item, tuple):
            current = item[0] + item[1]
        else:
            current = (current or b"") + item
            if current.endswith(b")"):
                seq = int(current.split(b" ", 1)[0])
                out[seq] = current
                current = None
    return out


def test_login_failures_slow_down_and_states_are_enforced(threaded):
    client = threaded.imap(login=False)
    assert "AUTH=PLAIN" in client.capabilities and "IDLE" in client.capabilities
    assert client.welcome.startswith(b"* OK [CAPABILITY IMAP4rev1")
    assert raw(client, b"SELECT INBOX") == b"r1 BAD command not allowed in this state"
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login(USER, "wrong")
    # Failed logins are slowed down: answered no earlier than the server's throttle said.
    slowed = threaded.server.login_throttle.state("127.0.0.1")
    assert (slowed.failures, slowed.last_delay) == (1, threaded.config.limits.login_delay)
    assert time.monotonic() >= slowed.answer_at
    typ, data = client.login("user", threaded.password)  # the local part alone works too
    assert typ == "OK" and b"[CAPABILITY " in data[0] and b"AUTH=" not in data[0]
    assert raw(client, b"LOGIN user x") == b"r1 BAD command not allowed in this state"
    assert client.logout()[0] == "BYE"


def test_authenticate_plain_and_login_mechanisms(threaded):
    client = threaded.imap(login=False)
    typ, _ = client.authenticate("PLAIN", lambda _: f"\0{USER}\0{threaded.password}".encode())
    assert typ == "OK" and client.state == "AUTH"
    client.logout()
    client = threaded.imap(login=False)
    answers = iter([USER.encode(), threaded.password.encode()])
    assert client.authenticate("LOGIN", lambda _: next(answers))[0] == "OK"
    client.logout()
    client = threaded.imap(login=False)
    with pytest.raises(imaplib.IMAP4.error, match="unsupported mechanism"):
        client.authenticate("CRAM-MD5", lambda _: b"x")
    # SASL-IR, as Thunderbird sends it
    initial = base64.b64encode(f"\0{USER}\0{threaded.password}".encode()).decode()
    typ, data = client._simple_command("AUTHENTICATE", "PLAIN", initial)
    assert typ == "OK"
    client.logout()


def test_list_lsub_namespace_id_enable_capability(threaded):
    client = threaded.imap()
    boxes = ok(client.list())
    assert b'(\\HasNoChildren) "/" "INBOX"' in boxes
    assert b'(\\HasNoChildren \\Sent) "/" "Sent"' in boxes
    assert b'(\\HasNoChildren \\Drafts) "/" "Drafts"' in boxes
    assert b'(\\HasNoChildren \\Trash) "/" "Trash"' in boxes
    assert b'(\\Noselect \\HasChildren) "/" "Agents"' in boxes
    assert b'(\\HasNoChildren) "/" "Agents/swe1@localdomain"' in boxes
    assert any(b'"Trace"' in b for b in boxes)
    assert ok(client.list('""', "%")) == [b for b in boxes if b"Agents/" not in b]
    assert ok(client.list("Agents/", "%")) == [b'(\\HasNoChildren) "/" "Agents/swe1@localdomain"']
    assert ok(client.list('""', "inbox")) == [b'(\\HasNoChildren) "/" "INBOX"']
    assert ok(client.list('""', '""')) == [b'(\\Noselect) "/" ""']
    assert ok(client.list('""', "nothing*")) == [None]
    ok(client._simple_command("LIST", "(SPECIAL-USE)", '""', '"*"'))  # Thunderbird
    special = client.untagged_responses.pop("LIST")
    assert len(special) == 4 and all(b"\\HasNoChildren \\" in s for s in special)
    assert any(b'"Sent"' in b for b in ok(client.lsub()))
    ok(client.unsubscribe("Trash"))
    assert not any(b'"Trash"' in b for b in ok(client.lsub()))
    ok(client.subscribe("Trash"))
    assert any(b'"Trash"' in b for b in ok(client.lsub('""', "*")))
    assert ok(client.namespace()) == [b'(("" "/")) NIL NIL']
    typ, data = client.xatom("ID", '("name" "imaplib" "version" "3")')
    assert typ == "OK" and b'"name" "mailcoach"' in client.untagged_responses.pop("ID")[0]
    typ, data = client.xatom("ID", "NIL")
    assert typ == "OK"
    client.untagged_responses.pop("ID", None)
    typ, data = client.enable("CONDSTORE")
    assert typ == "OK" and client.untagged_responses.pop("ENABLED") == [b""]
    assert "MOVE" in ok(client.capability())[0].decode().split()
    client.logout()


def test_select_examine_status_report_what_mbsync_needs(threaded):
    client = threaded.imap()
    for n in range(3):
        ok(client.append("INBOX", r"(\Seen)" if n == 0 else None, None, message(f"m{n}")))
    assert ok(client.select("INBOX")) == [b"3"]
    validity = int(code(client, "UIDVALIDITY"))
    assert validity > 0
    assert code(client, "UIDNEXT") == b"4"
    assert code(client, "UNSEEN") == b"2"
    assert b"\\*" in code(client, "PERMANENTFLAGS")
    assert code(client, "READ-WRITE") == b""  # the tagged OK carried [READ-WRITE]
    assert client.untagged_responses.get("RECENT") == [b"3"]  # this session is the first
    typ, data = client.select("INBOX", readonly=True)
    assert client.untagged_responses.get("RECENT") == [b"0"]  # ... and the only one
    assert typ == "OK" and code(client, "READ-ONLY") == b""
    status = ok(client.status("INBOX", "(MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)"))
    assert status == [f'"INBOX" (MESSAGES 3 RECENT 0 UIDNEXT 4 UIDVALIDITY {validity} '
                      f'UNSEEN 2)'.encode()]
    shipped = len(threaded.server.store.parties["swe1@localdomain"].memory)  # its primer
    assert ok(client.status("Agents/swe1@localdomain", "(MESSAGES UNSEEN)")) == [
        f'"Agents/swe1@localdomain" (MESSAGES {shipped} UNSEEN 0)'.encode()]
    typ, data = client.status("Nowhere", "(MESSAGES)")
    assert typ == "NO" and b"[NONEXISTENT]" in data[0]
    with pytest.raises(imaplib.IMAP4.error, match="BAD"):
        client.status("INBOX", "(BOGUS)")
    typ, data = client.select("Nowhere")
    assert typ == "NO" and b"[NONEXISTENT]" in data[0]
    assert client.state == "AUTH"  # a failed SELECT leaves nothing selected
    typ, data = client.select("Agents")
    assert typ == "NO" and b"[CANNOT]" in data[0]
    client.logout()


def test_append_with_flags_and_date_and_fetch_every_item(threaded):
    client = threaded.imap()
    data = ok(client.append("INBOX", r"(\Flagged $Important)", '"05-Feb-2024 13:14:15 +0100"',
                            SAMPLE))
    uidvalidity = ok(client.status("INBOX", "(UIDVALIDITY)"))[0].split()[-1].rstrip(b")")
    assert data == [b"[APPENDUID " + uidvalidity + b" 1] APPEND completed"]
    ok(client.select("INBOX"))
    assert b"$Important" in client.untagged_responses["FLAGS"][0]
    got = fetch_map(ok(client.fetch("1", "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)")))[1]
    assert got.startswith(b"1 (UID 1 FLAGS (\\Flagged $Important \\Recent) INTERNALDATE ")
    assert time.mktime(imaplib.Internaldate2tuple(got)) == 1707135255  # 13:14:15 +0100
    assert b"RFC822.SIZE %d" % len(SAMPLE) in got
    assert (b'ENVELOPE ("Mon, 01 Jan 2024 10:00:00 +0000" "=?utf-8?q?caf=C3=A9?= report" '
            b'(("Swe One" NIL "swe1" "localdomain")) (("Swe One" NIL "swe1" "localdomain")) '
            b'(("Swe One" NIL "swe1" "localdomain")) ((NIL NIL "user" "localdomain")) NIL NIL '
            b'NIL "<sample-1@localdomain>")') in got
    body = fetch_map(ok(client.fetch("1", "(BODYSTRUCTURE)")))[1]
    assert b'("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 19 1' in body
    assert b'"MIXED" ("BOUNDARY" "b1")' in body
    assert b'"BASE64" 4' in fetch_map(ok(client.fetch("1", "(BODY)")))[1]
    parts = ok(client.fetch("1", "(BODY.PEEK[1] BODY.PEEK[2.MIME] BODY.PEEK[1]<4.7> "
                                 "BODY.PEEK[HEADER.FIELDS (SUBJECT X-NOTE)] "
                                 "BODY.PEEK[HEADER.FIELDS.NOT (X-NOTE MIME-VERSION CONTENT-TYPE "
                                 "DATE MESSAGE-ID SUBJECT)] BODY.PEEK[3])"))
    literals = [item[1] for item in parts if isinstance(item, tuple)]
    assert literals == [
        b"The numbers are in.",
        b"Content-Type: application/octet-stream; name=data.bin\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n",
        b"numbers",
        b"Subject: =?utf-8?q?caf=C3=A9?= report\r\nX-Note: hello\r\n\r\n",
        b"From: Swe One <swe1@localdomain>\r\nTo: user@localdomain\r\n\r\n",
    ]
    assert parts[-1].endswith(b"BODY[3] NIL)")
    whole = ok(client.fetch("1", "(RFC822.HEADER RFC822.TEXT BODY.PEEK[TEXT] BODY.PEEK[])"))
    literals = [item[1] for item in whole if isinstance(item, tuple)]
    head, _, text = SAMPLE.partition(b"\r\n\r\n")
    assert literals == [head + b"\r\n\r\n", text, text, SAMPLE]
    # RFC822.TEXT set \Seen (it is not a peek) and said so
    assert b"\\Seen" in fetch_map(ok(client.fetch("1", "(FLAGS)")))[1]
    client.logout()


def test_body_fetch_sets_seen_but_peek_does_not(threaded):
    client = threaded.imap()
    ok(client.append("INBOX", None, None, message("one")))
    ok(client.select("INBOX"))
    ok(client.fetch("1", "(BODY.PEEK[])"))
    assert fetch_map(ok(client.fetch("1", "(FLAGS)")))[1] == b"1 (FLAGS (\\Recent))"
    got = ok(client.uid("FETCH", "1", "(BODY[HEADER])"))
    assert got[-1] == b" FLAGS (\\Seen \\Recent))"  # the flag change comes with the data
    assert got[0][0].startswith(b"1 (UID 1 BODY[HEADER] {")
    other = threaded.imap()
    ok(other.select("INBOX", readonly=True))
    typ, _ = other.store("1", "-FLAGS", r"(\Seen)")
    assert typ == "NO"  # EXAMINE is read-only
    ok(other.fetch("1", "(BODY[])"))  # ... and fetching there changes nothing
    other.logout()
    client.logout()


def test_store_modes_silent_and_keywords(threaded):
    client = threaded.imap()
    for n in range(3):
        ok(client.append("INBOX", None, None, message(f"s{n}")))
    ok(client.select("INBOX"))
    # \Recent is this session's (it selected first): shown, never stored or removed
    assert ok(client.store("1:2", "+FLAGS", r"(\Seen \Flagged)")) == [
        b"1 (FLAGS (\\Seen \\Flagged \\Recent))", b"2 (FLAGS (\\Seen \\Flagged \\Recent))"]
    assert ok(client.store("2", "-FLAGS", r"(\FLAGGED)")) == [b"2 (FLAGS (\\Seen \\Recent))"]
    assert ok(client.store("3", "FLAGS", r"(\Answered \Recent)")) == [
        b"3 (FLAGS (\\Answered \\Recent))"]
    assert ok(client.store("1:*", "+FLAGS.SILENT", r"(\Draft)")) == [None]
    assert ok(client.uid("STORE", "3", "FLAGS", "(Old)")) == [b"3 (UID 3 FLAGS (Old \\Recent))"]
    assert b"Old" in client.untagged_responses.pop("FLAGS")[-1]  # a new keyword is announced
    assert fetch_map(ok(client.fetch("1:3", "(FLAGS)"))) == {
        1: b"1 (FLAGS (\\Seen \\Flagged \\Draft \\Recent))",
        2: b"2 (FLAGS (\\Seen \\Draft \\Recent))", 3: b"3 (FLAGS (Old \\Recent))"}
    with pytest.raises(imaplib.IMAP4.error, match="BAD"):
        client.store("9", "+FLAGS", r"(\Seen)")
    with pytest.raises(imaplib.IMAP4.error, match="BAD"):
        client.store("1", "+FLAGS", "(\\Bogus")
    client.logout()


def test_search_keys_and_charsets(threaded):
    client = threaded.imap()
    ok(client.append("INBOX", r"(\Seen)", '"01-Mar-2024 10:00:00 +0000"', SAMPLE))
    ok(client.append("INBOX", None, '"05-Mar-2024 10:00:00 +0000"',
                     message("weekly", "café and cake", sender="shell@localdomain")))
    ok(client.append("INBOX", r"(Old \Deleted)", None, message("third", "x" * 5000)))
    ok(client.select("INBOX"))

    def search(*criteria, charset=None, uid=False):
        if uid:
            return ok(client.uid("SEARCH", *criteria))[0]
        return ok(client.search(charset, *criteria))[0]

    assert search("ALL") == b"1 2 3"
    assert search("SUBJECT", '"report"') == b"1"
    assert search("FROM", "shell") == b"2"
    assert search("TO", "user@localdomain") == b"1 2 3"
    assert search("BODY", "numbers") == b"1"
    assert search("TEXT", "X-Note") == b"1"
    assert search("HEADER", "X-Note", "hello") == b"1"
    assert search("UNSEEN") == b"2 3"
    assert search("SEEN") == b"1"
    assert search("DELETED", "KEYWORD", "Old") == b"3"
    assert search("UNKEYWORD", "Old") == b"1 2"
    assert search("OR", "SEEN", "DELETED") == b"1 3"
    assert search("NOT", "SEEN") == b"2 3"
    assert search("LARGER", "4000") == b"3"
    assert search("SMALLER", "4000") == b"1 2"
    assert search("SINCE", "4-Mar-2024", "BEFORE", "6-Mar-2024") == b"2"
    assert search("ON", "1-Mar-2024") == b"1"
    assert search("SENTBEFORE", "2-Jan-2024") == b"1"
    assert search("2:*") == b"2 3"
    assert search("UID", "1,3") == b"1 3"
    assert search("(SEEN SUBJECT report)") == b"1"
    assert search("UNSEEN", uid=True) == b"2 3"
    assert search("NEW") == b"2 3"  # recent (this session selected first) and unseen
    assert search("RECENT") == b"1 2 3"
    assert search("OLD") == b""
    # CHARSET with a literal, as clients send non-ASCII
    client.literal = "café".encode()
    typ, data = client.search("UTF-8", "BODY")
    assert (typ, data) == ("OK", [b"2"])
    typ, data = client._simple_command("SEARCH", "CHARSET", "X-NOPE", "ALL")
    assert typ == "NO" and b"[BADCHARSET" in data[0]
    with pytest.raises(imaplib.IMAP4.error, match="BAD"):
        client.search(None, "BOGUS")
    client.logout()


def test_copy_move_expunge_close_and_uidplus(threaded):
    client = threaded.imap()
    for n in range(4):
        ok(client.append("INBOX", None, None, message(f"c{n}")))
    ok(client.create("Archive"))
    validity = ok(client.status("Archive", "(UIDVALIDITY)"))[0].split()[-1].rstrip(b")")
    ok(client.select("INBOX"))
    assert ok(client.copy("2:3", "Archive")) == [
        b"[COPYUID " + validity + b" 2:3 1:2] COPY completed"]
    typ, data = client.copy("1", "Nowhere")
    assert typ == "NO" and b"[TRYCREATE]" in data[0]
    typ, data = client.copy("1", "Trace")
    assert typ == "NO" and b"[CANNOT]" in data[0]
    ok(client.uid("MOVE", "4", "Archive"))
    assert client.untagged_responses.pop("EXPUNGE") == [b"4"]
    assert b"[COPYUID " + validity + b" 4 3]" in client.untagged_responses.pop("OK")[-1]
    ok(client.store("1,3", "+FLAGS.SILENT", r"(\Deleted)"))
    ok(client.uid("EXPUNGE", "3"))  # UIDPLUS: only the named \Deleted message
    assert client.untagged_responses.pop("EXPUNGE") == [b"3"]
    assert ok(client.expunge()) == [b"1"]
    assert ok(client.search(None, "ALL")) == [b"1"]  # c1 is left
    assert ok(client.select("Archive")) == [b"3"]
    ok(client.store("1", "+FLAGS", r"(\Deleted)"))
    ok(client.close())  # expunges silently
    assert client.state == "AUTH"
    assert ok(client.status("Archive", "(MESSAGES)")) == [b'"Archive" (MESSAGES 2)']
    ok(client.select("Archive"))
    ok(client.store("1", "+FLAGS", r"(\Deleted)"))
    ok(client.unselect())  # does not expunge
    assert ok(client.status("Archive", "(MESSAGES)")) == [b'"Archive" (MESSAGES 2)']
    ok(client.select("Archive", readonly=True))
    ok(client.close())  # not after EXAMINE either
    assert ok(client.status("Archive", "(MESSAGES)")) == [b'"Archive" (MESSAGES 2)']
    assert raw(client, b"EXPUNGE") == b"r1 BAD command not allowed in this state"
    client.logout()


def test_create_delete_rename_subscribe(threaded):
    client = threaded.imap()
    ok(client.create("Projects/2024/"))  # superiors are made too; the trailing / is dropped
    boxes = ok(client.list('""', "Projects*"))
    assert boxes == [b'(\\HasChildren) "/" "Projects"', b'(\\HasNoChildren) "/" "Projects/2024"']
    for name, reason in (("Projects", "ALREADYEXISTS"), ("INBOX", "ALREADYEXISTS"),
                         ("Agents/mine", "NOPERM"), ("a//b", "CANNOT")):
        typ, data = client.create(name)
        assert typ == "NO" and reason.encode() in data[0], (name, data)
    ok(client.append("Projects/2024", None, None, message("p")))
    ok(client.rename("Projects", "Work"))
    assert ok(client.list('""', "Work*")) == [b'(\\HasChildren) "/" "Work"',
                                            b'(\\HasNoChildren) "/" "Work/2024"']
    assert ok(client.status("Work/2024", "(MESSAGES)")) == [b'"Work/2024" (MESSAGES 1)']
    assert ok(client.list('""', "Projects*")) == [None]
    typ, data = client.delete("Work")
    assert typ == "NO"  # it has subfolders
    ok(client.delete("Work/2024"))
    ok(client.delete("Work"))
    for name in ("INBOX", "Sent", "Trace", "Agents/swe1@localdomain", "Nowhere"):
        assert client.delete(name)[0] == "NO", name
    assert client.rename("Sent", "Outbox")[0] == "NO"
    assert client.rename("Trace", "Mine")[0] == "NO"
    # RENAME INBOX moves its messages into a new folder; INBOX stays, empty
    ok(client.append("INBOX", None, None, message("old inbox mail")))
    ok(client.rename("INBOX", "Old"))
    assert ok(client.status("Old", "(MESSAGES)")) == [b'"Old" (MESSAGES 1)']
    assert ok(client.status("INBOX", "(MESSAGES UIDNEXT)")) == [
        b'"INBOX" (MESSAGES 0 UIDNEXT 2)']
    # a folder made again gets a new UIDVALIDITY, even within the same second
    ok(client.create("Again"))
    first = ok(client.status("Again", "(UIDVALIDITY)"))
    ok(client.delete("Again"))
    ok(client.create("Again"))
    assert ok(client.status("Again", "(UIDVALIDITY)")) != first
    # claws-mail makes and subscribes its Queue
    ok(client.create("Queue"))
    ok(client.subscribe("Queue"))
    assert any(b'"Queue"' in b for b in ok(client.lsub('""', "*")))
    assert client.subscribe("Nowhere")[0] == "NO"
    client.logout()


def test_trace_and_agents_are_read_only_and_read(threaded):
    threaded.send(message("to self", sender=USER), [USER])
    client = threaded.imap()
    wait_until(lambda: ok(client.status("Trace", "(MESSAGES)")) == [b'"Trace" (MESSAGES 1)'])
    typ, data = client.select("Trace", readonly=True)
    assert typ == "OK" and code(client, "READ-ONLY") == b""
    assert code(client, "PERMANENTFLAGS") == b"()"
    assert fetch_map(ok(client.fetch("1", "(FLAGS)")))[1] == b"1 (FLAGS (\\Seen))"
    for result in (client.store("1", "+FLAGS", r"(\Flagged)"), client.expunge(),
                   client.uid("MOVE", "1", "INBOX")):
        assert result[0] == "NO" and b"[READ-ONLY]" in result[1][0]
    typ, data = client.append("Trace", None, None, message("nope"))
    assert typ == "NO" and b"[CANNOT]" in data[0]
    ok(client.create("Keep"))
    ok(client.copy("1", "Keep"))  # copying out of an archive is fine
    client.select("Agents/swe1@localdomain", readonly=True)
    assert client.untagged_responses.get("EXISTS") == [b"6"]
    uids = ok(client.uid("SEARCH", "ALL"))[0].split()
    assert uids == [b"1", b"2", b"3", b"4", b"5", b"6"]  # the shipped memory, by message id
    assert b"From: user@localdomain" in ok(client.fetch("1", "(BODY[])"))[0][1]
    client.logout()


def test_protocol_errors_are_bad_with_a_reason(threaded):
    client = threaded.imap()
    for line, answer in ((b"FROB", b"r1 BAD unknown command FROB"),
                         (b"FETCH 1 (FLAGS)", b"r1 BAD command not allowed in this state"),
                         (b"SELECT", b"r1 BAD expected space"),
                         (b'SELECT "unterminated', b"r1 BAD bad quoted string")):
        assert raw(client, line) == answer
    ok(client.select("INBOX"))
    with pytest.raises(imaplib.IMAP4.error, match="sequence number"):
        client.fetch("1", "(FLAGS)")  # empty mailbox: there is no message 1
    assert ok(client.fetch("1:*", "(FLAGS)")) == [None]  # but * names nothing, fine
    assert ok(client.uid("FETCH", "1:*", "(FLAGS)")) == [None]
    typ, data = client.append("Nowhere", None, None, message("x"))
    assert typ == "NO" and b"[TRYCREATE]" in data[0]
    assert raw(client, b"STARTTLS") == b"r1 BAD command not allowed in this state"
    assert ok(client.noop()) == [b"NOOP completed"]
    assert ok(client.check()) == [b"CHECK completed"]
    client.logout()


def test_flags_and_new_mail_reach_the_other_sessions(threaded):
    first, second = threaded.imap(), threaded.imap()
    ok(first.append("INBOX", None, None, message("shared")))
    ok(first.select("INBOX"))
    ok(second.select("INBOX"))
    ok(first.store("1", "+FLAGS", r"(\Flagged)"))
    ok(second.noop())
    assert second.untagged_responses.pop("FETCH") == [b"1 (UID 1 FLAGS (\\Flagged))"]
    ok(second.append("INBOX", None, None, message("another")))
    ok(first.noop())
    assert first.untagged_responses.pop("EXISTS")[-1] == b"2"
    ok(second.noop())
    ok(second.store("1", "+FLAGS", r"(\Deleted)"))
    ok(second.expunge())
    # a FETCH must not see the expunge (RFC 3501 §7.4.1), the next NOOP does
    assert fetch_map(ok(first.fetch("1", "(FLAGS)")))[1].startswith(b"1 (FLAGS (")
    assert "EXPUNGE" not in first.untagged_responses
    ok(first.noop())
    assert first.untagged_responses.pop("EXPUNGE") == [b"1"]
    assert ok(first.search(None, "ALL")) == [b"1"]
    first.logout()
    second.logout()


def test_sent_copy_of_smtp_mail_is_not_stored_twice(threaded):
    """Thunderbird: SMTP, then APPEND to Sent; claws-mail: APPEND Queue, UID COPY Sent."""
    raw = message("tb", sender=USER, message_id="<tb-1@localdomain>").replace(
        b"To: user@localdomain", b"To: shell@localdomain")
    threaded.send(raw, ["shell@localdomain"])
    client = threaded.imap()
    wait_until(lambda: ok(client.status("Sent", "(MESSAGES)")) == [b'"Sent" (MESSAGES 1)'])
    data = ok(client.append("Sent", r"(\Seen)", None, raw))
    assert re.fullmatch(rb"\[APPENDUID \d+ 1\] .*", data[0])
    assert ok(client.status("Sent", "(MESSAGES)")) == [b'"Sent" (MESSAGES 1)']
    # claws-mail's way
    raw2 = message("claws", sender=USER, message_id="<claws-1@localdomain>").replace(
        b"To: user@localdomain", b"To: shell@localdomain")
    threaded.send(raw2, ["shell@localdomain"])
    wait_until(lambda: ok(client.status("Sent", "(MESSAGES)")) == [b'"Sent" (MESSAGES 2)'])
    ok(client.create("Queue"))
    ok(client.append("Queue", None, None, raw2))
    ok(client.select("Queue"))
    data = ok(client._simple_command("UID", "COPY", "1", "Sent"))
    assert re.fullmatch(rb"\[COPYUID \d+ 1 2\] COPY completed", data[0])
    ok(client.store("1", "+FLAGS", r"(\Deleted)"))
    ok(client.expunge())
    assert ok(client.status("Sent", "(MESSAGES)")) == [b'"Sent" (MESSAGES 2)']
    # a message not sent over SMTP is stored, of course
    ok(client.append("Sent", None, None, message("draft sent elsewhere", sender=USER)))
    assert ok(client.status("Sent", "(MESSAGES)")) == [b'"Sent" (MESSAGES 3)']
    # a client that saves before it sends: its early copy gives way to the one sent
    raw3 = message("early", sender=USER, message_id="<early-1@localdomain>").replace(
        b"To: user@localdomain", b"To: shell@localdomain")
    ok(client.select("Sent"))
    ok(client.append("Sent", r"(\Seen)", None, raw3))
    threaded.send(raw3, ["shell@localdomain"])
    wait_until(lambda: _sent_copies(client, "<early-1@localdomain>") == [True],
               what="only the copy that was sent")
    assert ok(client.status("Sent", "(MESSAGES)")) == [b'"Sent" (MESSAGES 4)']
    client.logout()


def _sent_copies(client: imaplib.IMAP4, message_id: str) -> list[bool]:
    """For each copy of ``message_id`` in Sent: whether it is the one that went by SMTP."""
    ok(client.select("Sent"))
    found = ok(client.search(None, "HEADER", "Message-ID", message_id))[0]
    return [b"Received: from " in ok(client.fetch(seq, "(BODY.PEEK[HEADER])"))[0][1]
            for seq in found.split()]


def test_an_early_sent_copy_gives_way_after_a_restart_and_when_copied_there(tmp_path):
    def outgoing(name: str) -> bytes:
        return message(name, sender=USER, message_id=f"<{name}@localdomain>").replace(
            b"To: user@localdomain", b"To: shell@localdomain")

    config = make_config(tmp_path)
    server = ThreadedServer(config).start()
    try:
        client = server.imap()
        ok(client.append("Sent", r"(\Seen)", None, outgoing("before-restart")))
        client.logout()
    finally:
        server.stop()
    server = ThreadedServer(config).start()  # what it knows of Sent is read at start
    try:
        server.send(outgoing("before-restart"), ["shell@localdomain"])
        client = server.imap()
        wait_until(lambda: _sent_copies(client, "<before-restart@localdomain>") == [True],
                   what="only the copy that was sent")
        ok(client.create("Queue"))  # a client that files in Sent by COPY before sending
        ok(client.append("Queue", None, None, outgoing("copied")))
        ok(client.select("Queue"))
        ok(client.copy("1", "Sent"))
        assert _sent_copies(client, "<copied@localdomain>") == [False]
        server.send(outgoing("copied"), ["shell@localdomain"])
        wait_until(lambda: _sent_copies(client, "<copied@localdomain>") == [True],
                   what="only the copy that was sent")
        client.logout()
    finally:
        server.stop()


def test_literal_plus_and_pipelined_commands(threaded):
    client = threaded.imap()
    body = message("literal plus")
    client.send(b"a1 APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\na2 NOOP\r\n")
    lines = [client.readline(), client.readline()]
    assert lines[0].startswith(b"a1 OK [APPENDUID ")
    assert lines[1] == b"a2 OK NOOP completed\r\n"
    client.logout()


def test_a_message_another_session_expunged_keeps_its_number_until_it_is_told(threaded):
    """RFC 3501 §2.3.1.2 / §7.4.1: FETCH still answers for it (its bytes are kept), no
    EXPUNGE during FETCH, the EXPUNGE comes with the next command that allows it."""
    writer = threaded.imap()
    for n in (1, 2, 3):
        ok(writer.append("INBOX", None, None, message(f"kept {n}")))
    reader = threaded.imap()
    assert ok(reader.select("INBOX")) == [b"3"]
    ok(writer.select("INBOX"))
    ok(writer.store("2", "+FLAGS.SILENT", "(\\Deleted)"))
    ok(writer.expunge())

    data = ok(reader.fetch("1:3", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
    subjects = [part[1].strip() for part in data if isinstance(part, tuple)]
    assert subjects == [b"Subject: kept 1", b"Subject: kept 2", b"Subject: kept 3"]
    assert "EXPUNGE" not in reader.untagged_responses
    ok(reader.noop())
    assert reader.untagged_responses.pop("EXPUNGE") == [b"2"]
    data = ok(reader.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
    assert [part[1].strip() for part in data if isinstance(part, tuple)] == [
        b"Subject: kept 1", b"Subject: kept 3"]


def test_select_of_a_folder_whose_messages_another_session_expunges_meanwhile(threaded):
    """The snapshot is read off the event loop: an expunge is ordered before or after it,
    never lost in between (the numbers the reader is given all answer FETCH)."""
    writer = threaded.imap()
    for n in range(40):
        ok(writer.append("INBOX", None, None, message(f"m{n}")))
    ok(writer.select("INBOX"))
    reader = threaded.imap()
    for round_ in range(10):
        ok(writer.store(f"{1 + round_}", "+FLAGS.SILENT", "(\\Deleted)"))
        writer.send(b"x%d EXPUNGE\r\n" % round_)  # in flight while the reader selects
        exists = int(ok(reader.select("INBOX"))[0])
        while not writer.readline().startswith(b"x%d " % round_):
            pass
        data = ok(reader.fetch(f"1:{exists}", "(UID)"))
        assert len([line for line in data if b"UID" in line]) == exists
