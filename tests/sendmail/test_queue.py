"""``mailcoach serve --queue FILE``: each message once, across restarts; ``--budget`` holds."""

from __future__ import annotations

from tests.sendmail import mbox_bytes, message
from tests.support import ServerProcess, config_data, mbox_messages, wait_until, write_config


def queue_line(server):
    """The line after the banner that reports the queue (printed once it is submitted)."""
    line = server.proc.stdout.readline()
    assert line.startswith("  queue "), line
    return line.strip()


def requests(data):
    return [m for m in mbox_messages(data / "trace") if m["From"] == "user@localdomain"]


def test_queue_is_submitted_once_across_a_restart(tmp_path):
    data = tmp_path / "data"
    config = write_config(tmp_path / "c.yaml", config_data(data))
    queue = tmp_path / "jobs.mbox"
    no_id = message("shell@localdomain", "echo three")
    del no_id["Message-ID"]  # gets a stable one from its bytes
    queue.write_bytes(mbox_bytes(
        message("shell@localdomain", "echo one", Message_ID="<job-1@test>"),
        message("shell@localdomain", "echo two", Message_ID="<job-2@test>"),
        no_id,
    ))
    with ServerProcess(config, "--queue", str(queue)) as server:
        assert queue_line(server).endswith("3 submitted, 0 already done")
        wait_until(lambda: len(mbox_messages(data / "user@localdomain.mbox")) == 6,
                   what="three shell replies")
    assert [m["Subject"] for m in requests(data)] == ["echo one", "echo two", "echo three"]

    with ServerProcess(config, "--queue", str(queue)) as server:
        assert queue_line(server).endswith("0 submitted, 3 already done")
    assert len(requests(data)) == 3
    replies = [m for m in mbox_messages(data / "trace") if m["From"] == "shell@localdomain"]
    assert len(replies) == 3


def test_queue_with_budget_stops_the_agents_at_the_budget(tmp_path, model_server):
    model_server.responder = lambda request: "To: user@localdomain\nSubject: done\n\nok"
    data = tmp_path / "data"
    config = write_config(tmp_path / "c.yaml", config_data(data, model_server.spec()))
    queue = tmp_path / "jobs.mbox"
    queue.write_bytes(mbox_bytes(*[message("swe1@localdomain", f"job {n}",
                                           Message_ID=f"<budget-{n}@test>") for n in range(4)]))
    # Each call costs 10*1 + 5*2 = 20 USD per million tokens = 0.00002 USD.
    with ServerProcess(config, "--queue", str(queue), "--budget", "0.00003") as server:
        assert queue_line(server).endswith("4 submitted, 0 already done")

        def budget_note():
            return [m for m in mbox_messages(data / "user@localdomain.mbox")
                    if "budget spent" in (m["Subject"] or "")]
        wait_until(budget_note, what="the budget note")
        answers = [m for m in mbox_messages(data / "user@localdomain.mbox")
                   if m["From"] == "swe1@localdomain" and m["Subject"] == "done"]
        assert len(answers) == 2 and len(model_server.requests) == 2
