"""The served chat format, over raw HTTP: Gemma turns, and as strict as Gemma's own template.

vLLM serving Gemma answers 400 "Conversation roles must alternate ..." to two turns of
one role in a row; ``gemma_strict.jinja`` makes llama.cpp do the same, so the runtime's
strict-template handling meets a real refusal, not only the scripted one.
"""

from __future__ import annotations

import pytest

from tests.realmodel.checks import DEBRIS
from tests.realmodel.conftest import N_CTX

ALTERNATE = "roles must alternate"
pytestmark = pytest.mark.timeout(600)  # the first test waits for the model to load


@pytest.mark.parametrize("roles", [
    ["user", "user"],
    ["system", "user", "user"],
    ["user", "assistant", "assistant", "user"],
    ["assistant", "user"],
    ["system", "system", "user"],
], ids=lambda roles: "-".join(roles))
def test_turns_that_do_not_alternate_are_refused_with_400(gemma, roles):
    messages = [{"role": role, "content": f"turn {i}"} for i, role in enumerate(roles)]
    status, body = gemma.chat(messages, max_tokens=4)
    assert status == 400, body
    assert ALTERNATE in body["error"]["message"].lower(), body


def test_alternating_turns_after_a_system_turn_are_answered(gemma):
    status, body = gemma.chat([
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "What colour is the sky?"},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "And grass?"},
    ], max_tokens=16)
    assert status == 200, body
    text = body["choices"][0]["message"]["content"]
    assert isinstance(text, str)
    assert not any(junk in text for junk in DEBRIS), text
    assert body["usage"]["completion_tokens"] >= 1


def test_the_prompt_is_gemma_turns_with_the_system_text_opening_the_first_user_turn(gemma):
    status, body = gemma.post("/apply-template", {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "Bye"},
    ]})
    assert status == 200, body
    prompt = body["prompt"].removeprefix("<bos>")
    assert prompt == (
        "<start_of_turn>user\nBe brief.\n\nHello<end_of_turn>\n"
        "<start_of_turn>model\nHi.<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_a_prompt_longer_than_the_context_is_refused_not_cut(gemma):
    # What the runtime has to handle for a long memory: the server refuses outright.
    status, body = gemma.chat([{"role": "user", "content": "word " * (N_CTX * 2)}],
                              max_tokens=4)
    assert status == 400, body
    assert "context" in body["error"]["message"].lower(), body
