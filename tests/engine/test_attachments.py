"""Files reach agents: text attachments shown inline (cut and counted), others named."""

from __future__ import annotations

import json
from email.message import EmailMessage

import pytest

from mailcoach_server.mailtext import parse_message, read_message, text_of
from mailcoach_server.runtime.context import turn_text
from tests.engine.test_flow import replies_to_user, send
from tests.support import make_config, serve_in_process, wait_for


def with_attachment(data: bytes, maintype: str, subtype: str, filename: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "user@localdomain"
    message["To"] = "swe1@localdomain"
    message["Subject"] = "look at this"
    message.set_content("What do you make of the attached file?\n")
    message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message


@pytest.mark.parametrize("maintype, subtype, filename", [
    ("text", "plain", "notes.txt"), ("application", "json", "data.json"),
    ("text", "csv", "table.csv"), ("application", "octet-stream", "fix.py"),
    ("application", "x-yaml", "ci.yml"),
])
def test_text_attachments_are_shown_after_their_line(maintype, subtype, filename):
    data = json.dumps({"answer": 42}).encode() if subtype == "json" else b"col,value\nx,42\n"
    shown = turn_text(read_message(
        with_attachment(data, maintype, subtype, filename).as_bytes()))
    assert f"[attachment: {filename}, {maintype}/{subtype}" in shown
    assert "42" in shown and f"[end of {filename}]" in shown
    assert shown.index("What do you make") < shown.index("[attachment:")


def test_binary_and_disguised_binary_attachments_are_only_named():
    for data, kind, name in [(b"\x89PNG\r\n\x1a\n" + bytes(200), ("image", "png"), "a.png"),
                             (b"\x00\x01\x02" * 100, ("application", "octet-stream"), "x.py"),
                             (b"%PDF-1.4 ...", ("application", "pdf"), "doc.pdf")]:
        shown = turn_text(read_message(with_attachment(data, *kind, name).as_bytes()))
        assert f"[attachment: {name}, {'/'.join(kind)}" in shown
        assert "[end of" not in shown


def test_a_long_attachment_keeps_its_first_and_last_lines_and_counts_the_rest():
    lines = [f"line {n:05d}" for n in range(10_000)]
    message = parse_message(with_attachment("\n".join(lines).encode(), "text", "plain",
                                            "big.log").as_bytes())
    shown = text_of(message, inline_limit=2_000)
    assert "line 00000" in shown and "line 09999" in shown and "line 05000" not in shown
    skipped = int(shown.split("--- ")[1].split(" lines skipped")[0])
    kept = sum(1 for line in shown.splitlines() if line.startswith("line "))
    assert kept + skipped == 10_000 and len(shown) < 2_400
    assert text_of(message, inline_limit=0).count("line ") == 0  # 0: named only


def test_one_enormous_line_is_cut_by_characters():
    message = parse_message(with_attachment(b"x" * 100_000, "text", "plain",
                                            "one.txt").as_bytes())
    shown = text_of(message, inline_limit=1_000)
    assert "99000 characters skipped" in shown and len(shown) < 1_300


async def test_an_agent_is_sent_the_attachment_through_litellm(tmp_path, model_server):
    log = "\n".join(f"request {n} ok" for n in range(3000)) + "\nFATAL: out of memory\n"
    model_server.responder = lambda request: (
        "To: user@localdomain\nSubject: diagnosis\n\n"
        + ("out of memory" if "FATAL: out of memory" in request["messages"][-1]["content"]
           else "I see no log"))
    config = make_config(tmp_path, model_server.spec(), limits={"attachment_text": 5000})
    async with serve_in_process(config) as server:
        await send(server, with_attachment(log.encode(), "text", "plain", "server.log"))
        [reply] = await wait_for(lambda: replies_to_user(server), timeout=90, what="the answer")
    assert "out of memory" in reply.get_payload()
    shown = model_server.requests[-1]["messages"][-1]["content"]
    assert "[attachment: server.log, text/plain" in shown and "lines skipped" in shown
    assert len(shown) < 6_000


PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00"
       b"\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N"
       b"\x00\x00\x00\x00IEND\xaeB`\x82")


@pytest.mark.parametrize("vision", [True, False])
async def test_images_go_as_image_parts_only_to_models_that_take_them(tmp_path, model_server,
                                                                     vision):
    import base64

    model_server.responder = lambda request: "To: user@localdomain\nSubject: seen\n\nok"
    extra = {"models": {"vision": [model_server.spec()]}} if vision else {}
    config = make_config(tmp_path, model_server.spec(), **extra)
    async with serve_in_process(config) as server:
        await send(server, with_attachment(PNG, "image", "png", "dot.png"))
        await wait_for(lambda: replies_to_user(server), timeout=90, what="the answer")
    content = model_server.requests[-1]["messages"][-1]["content"]
    if vision:
        text, image = content
        assert text["type"] == "text" and "[attachment: dot.png, image/png" in text["text"]
        assert image == {"type": "image_url", "image_url": {
            "url": "data:image/png;base64," + base64.b64encode(PNG).decode()}}
    else:
        assert isinstance(content, str) and "[attachment: dot.png, image/png" in content
        assert "base64" not in content


def test_merged_turns_keep_their_images():
    from mailcoach_server.runtime.llm import ChatTemplate, ChatTurn, fit_turns

    turns = [ChatTurn("system", "s"), ChatTurn("user", "a", ("data:image/png;base64,AA",)),
             ChatTurn("user", "b", ("data:image/gif;base64,BB",))]
    [system, merged] = fit_turns(turns, ChatTemplate(alternate_roles=True))
    assert merged.images == ("data:image/png;base64,AA", "data:image/gif;base64,BB")
    assert [part["type"] for part in merged.as_dict()["content"]] == [
        "text", "image_url", "image_url"]
