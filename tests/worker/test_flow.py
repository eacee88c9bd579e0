"""A human's mail through Postfix to an agent served by one worker, through the shell robot
served by a second worker process, and back to the human's Dovecot mailbox."""

from __future__ import annotations

from tests.worker.support import (
    SHELL,
    SWE1,
    USER,
    WorkerProcess,
    messages,
    question,
    wait_for_messages,
    write_worker_config,
)


def test_human_agent_shell_and_back(mail, model_server, tmp_path):
    # The agent first asks the shell, then answers the human with what it said.
    def respond(body):
        last = body["messages"][-1]["content"]
        if "Exit Code: 0" in last:
            output = last.strip().splitlines()[-1].strip()  # the output's last line
            return f"To: {USER}\nSubject: the answer\n\nThe shell said: {output}"
        return f"To: {SHELL}\nSubject: echo hello-from-the-shell\n\n"
    model_server.responder = respond
    agent_cfg = write_worker_config(tmp_path / "agents", mail, model_server, [SWE1])
    robot_cfg = write_worker_config(tmp_path / "robots", mail, model_server, [SHELL])
    with WorkerProcess(agent_cfg), WorkerProcess(robot_cfg):
        mail.submit(USER, [SWE1], question("What does the shell say?"))
        got = wait_for_messages(mail, USER, 1)
    answer = got[0]
    assert answer["From"] == SWE1 and answer["Subject"] == "the answer"
    assert "The shell said: hello-from-the-shell" in answer.get_payload()
    asked = messages(mail, SWE1)[0]
    assert answer["In-Reply-To"] == asked["Message-ID"]  # threaded under the question
    assert answer["M-Cost"] and float(answer["M-Cost"]) > 0
    # The memory is the mailbox: both replies of swe1 are in its Sent, the shell's in its own.
    sent = messages(mail, SWE1, "Sent")
    assert [m["To"] for m in sent] == [SHELL, USER]
    assert [m["Subject"] for m in messages(mail, SHELL, "Sent")] == ["Exit Code: 0"]
    # The model saw the conversation in order: question, its shell command, the output.
    final_turns = [t["content"] for t in model_server.requests[-1]["messages"][1:]]
    assert "What does the shell say?" in final_turns[0]
    assert "echo hello-from-the-shell" in final_turns[1]
    assert "hello-from-the-shell" in final_turns[2] and "Exit Code: 0" in final_turns[2]
    assert len(model_server.requests) == 2
