"""``mailcoach-sendmail`` against a running server: flags, recipients, queues, exit codes."""

from __future__ import annotations

import pytest

from mailcoach_server.sendmail import _exit_for
from tests.sendmail import mbox_bytes, message, run_sendmail, sendmail_config
from tests.support import ServerProcess, mbox_messages, wait_until


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("sendmail")
    config = sendmail_config(tmp_path)
    with ServerProcess(config) as proc:
        proc.config = config
        proc.data = tmp_path / "data"
        yield proc


def trace(server):
    return mbox_messages(server.data / "trace")


def stored(server, subject):
    return [m for m in trace(server) if m["Subject"] == subject]


def shell_reply_to(server, request):
    def find():
        return [m for m in trace(server) if m["In-Reply-To"] == request["Message-ID"]]
    return wait_until(find, what="the shell's reply")[0]


def test_t_takes_to_cc_bcc_and_removes_bcc(server):
    msg = message("shell@localdomain", "echo from -t", Cc="cc.notes@localdomain",
                  Bcc="bcc.notes@localdomain")
    result = run_sendmail(server.config, "-t", "-i", stdin=msg.as_bytes())
    assert (result.returncode, result.stderr) == (0, "")
    [request] = stored(server, "echo from -t")
    assert request["Bcc"] is None
    assert shell_reply_to(server, request)["Subject"] == "Exit Code: 0"
    for party in ("cc.notes@localdomain", "bcc.notes@localdomain"):  # they remember it
        memory = mbox_messages(server.data / f"{party}.mbox")
        assert [m["Subject"] for m in memory] == ["echo from -t"]
        assert memory[0]["Bcc"] is None


def test_recipients_as_arguments_and_a_bare_name(server):
    raw = b"Subject: echo by argument\n\nbody\n"  # no From, no To
    result = run_sendmail(server.config, "-oi", "-oem", "-odi", "-bm", "shell", stdin=raw)
    assert (result.returncode, result.stderr) == (0, "")
    [request] = stored(server, "echo by argument")
    assert request["From"] == "user@localdomain"
    assert request["To"] == "shell@localdomain"  # added: To is what makes the shell act
    assert shell_reply_to(server, request)["Subject"] == "Exit Code: 0"


def test_arguments_without_t_ignore_the_headers(server):
    msg = message("shell@localdomain", "kept only by args.notes")
    result = run_sendmail(server.config, "args.notes@localdomain", stdin=msg.as_bytes())
    assert result.returncode == 0, result.stderr
    [request] = stored(server, "kept only by args.notes")
    assert request["To"] == "shell@localdomain"  # the header is left as written
    memory = mbox_messages(server.data / "args.notes@localdomain.mbox")
    assert [m["Subject"] for m in memory] == ["kept only by args.notes"]
    assert not mbox_messages(server.data / "shell@localdomain.mbox") or all(
        m["Subject"] != "kept only by args.notes"
        for m in mbox_messages(server.data / "shell@localdomain.mbox"))


def test_queue_mbox_submits_every_message_in_order(server):
    messages = [message("shell@localdomain", f"echo queued {n}",
                        body=f"From the queue, line {n}\n") for n in range(3)]
    result = run_sendmail(server.config, "-v", stdin=mbox_bytes(*messages))
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("250 2.0.0 OK") == 3
    subjects = [m["Subject"] for m in trace(server) if "queued" in (m["Subject"] or "")]
    assert subjects == ["echo queued 0", "echo queued 1", "echo queued 2"]
    # sendmail undid the queue's mboxrd quoting and the trace quotes it once again, so
    # the project's reader gives the line back as sent (not ">From", nor ">>From").
    first = stored(server, "echo queued 0")[0]
    assert first.get_payload() == "From the queue, line 0\n"


def test_f_and_F_make_the_from_header(server):
    raw = b"To: shell@localdomain\nSubject: echo with -f\n\n"
    result = run_sendmail(server.config, "-t", "-f", "f.notes@localdomain", "-FNote Taker",
                          stdin=raw)
    assert result.returncode == 0, result.stderr
    [request] = stored(server, "echo with -f")
    assert request["From"] == "Note Taker <f.notes@localdomain>"
    reply = shell_reply_to(server, request)
    assert reply["To"] == "f.notes@localdomain"


def test_without_i_a_lone_dot_ends_the_message(server):
    raw = b"To: dots.notes@localdomain\nSubject: dot test\n\nline one\n.\nline two\n"
    assert run_sendmail(server.config, "-t", stdin=raw).returncode == 0
    assert run_sendmail(server.config, "-t", "-i", stdin=raw.replace(b"dot test", b"dot -i"),
                        ).returncode == 0
    assert stored(server, "dot test")[0].get_payload() == "line one\n"
    assert stored(server, "dot -i")[0].get_payload() == "line one\n.\nline two\n"


@pytest.mark.parametrize(("args", "raw", "code", "says"), [
    (["bad address@"], b"Subject: x\n\n", 64, "bad recipient address: bad address@"),
    (["-t"], b"To: not an address\nSubject: x\n\n", 65, "bad address in the To"),
    (["-f", "a b@"], b"Subject: x\n\n", 64, "bad sender address"),
    (["-t"], b"Subject: nobody\n\nbody\n", 64, "no recipients in To, Cc or Bcc"),
    ([], b"Subject: nobody\n\nbody\n", 64, "no recipients given"),
    (["-q"], b"Subject: x\n\n", 64, "option -q not recognized"),
    (["-bs", "x"], b"Subject: x\n\n", 64, "-bs is not supported"),
    (["x"], b"", 65, "no message on standard input"),
], ids=["bad-arg", "bad-header", "bad-sender", "t-without-recipients", "no-recipients",
        "unknown-option", "smtp-mode", "empty-input"])
def test_usage_and_data_errors(server, args, raw, code, says):
    result = run_sendmail(server.config, *args, stdin=raw)
    assert result.returncode == code
    assert result.stderr.startswith("mailcoach-sendmail: ") and says in result.stderr
    assert result.stderr.count("\n") == 1  # one line


def test_non_local_recipient_is_67_and_nothing_is_stored(server):
    before = len(trace(server))
    msg = message("shell@localdomain", "echo relay", Cc="someone@example.com")
    result = run_sendmail(server.config, "-t", stdin=msg.as_bytes())
    assert result.returncode == 67
    assert "recipient someone@example.com refused: 550 5.7.1 relay denied" in result.stderr
    assert len(trace(server)) == before


def test_queue_stops_at_the_first_refusal_and_says_how_many_went(server):
    messages = [message("shell@localdomain", "echo stop 1"),
                message("elsewhere@example.com", "echo stop 2"),
                message("shell@localdomain", "echo stop 3")]
    result = run_sendmail(server.config, stdin=mbox_bytes(*messages))
    assert result.returncode == 67
    assert result.stderr.startswith("mailcoach-sendmail: message 2 of 3: recipient "
                                    "elsewhere@example.com refused: 550 5.7.1")
    assert result.stderr.rstrip().endswith("; 1 submitted")
    subjects = [m["Subject"] for m in trace(server)]
    assert "echo stop 1" in subjects and "echo stop 2" not in subjects
    assert "echo stop 3" not in subjects


def test_a_wrong_password_is_77(server, tmp_path):
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "login").write_text("not-the-password\n")
    result = run_sendmail(server.config, "--data-dir", str(other), "shell",
                          stdin=b"Subject: x\n\n")
    assert result.returncode == 77
    assert "login as user@localdomain refused: 535" in result.stderr


def test_help_and_version():
    from mailcoach_server.sendmail import main
    assert main(["--help"]) == 0
    assert main(["--version"]) == 0


@pytest.mark.parametrize(("stage", "reply", "code"), [
    ("RCPT", "550 5.1.1 No such mailbox", 67),
    ("RCPT", "550 5.7.1 relay denied", 67),
    ("RCPT", "553 5.1.3 bad recipient address", 65),
    ("RCPT", "451 4.3.0 try later", 75),
    ("MAIL", "530 5.7.0 Authentication required", 77),
    ("MAIL", "553 5.1.7 bad sender", 65),
    ("DATA", "552 5.3.4 message too big", 65),
    ("DATA", "554 5.4.6 too many hops", 65),
    ("DATA", "553 5.7.1 sender not in the local domain", 65),
    ("DATA", "550 5.1.1 unknown", 67),
    ("DATA", "421 4.3.2 shutting down", 75),
    ("HELO", "554 5.3.2 go away", 69),
])
def test_smtp_replies_map_to_sysexits(stage, reply, code):
    assert _exit_for(stage, reply) == code
