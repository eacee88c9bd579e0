"""The plain-reply fast path writes exactly the bytes the EmailMessage path writes.

``reply_bytes.plain_reply`` skips ``email``'s header objects for the common
answer; wherever it answers (not None) its bytes must be those of
``party.model_reply(...).as_bytes()``, for any model answer, incoming
message and cost stamp. Hypothesis generates hostile text too: non-ASCII, encoded words, long
lines, odd spacing, folded and duplicated headers.
"""

from __future__ import annotations

from email import policy

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailcoach_server.mailtext import read_message
from mailcoach_server.runtime.party import model_reply
from mailcoach_server.runtime.reply_bytes import header_line, plain_reply, text_body

AGENT = "agent7@localdomain"
USER = "user@localdomain"

# Text that is mostly plain, with the characters that make folding and encoding differ.
_CHARS = st.sampled_from(list("abcXYZ019 .,:;<>@\"'()[]\\=?_-+/\t\r\n") +
                         ["é", "→", "=?utf-8?q?x?=", "  ", "\x7f", "\x00", "\u2028"])
text_pieces = st.lists(_CHARS, max_size=30).map("".join)
words = st.lists(st.sampled_from(["hello", "re:", "a", "<x@y>", "=?", "ümlaut", "x" * 40]),
                 max_size=6).map(" ".join)
addresses = st.sampled_from([USER, "swe1@localdomain", AGENT, "A.B+c@LocalDomain",
                             "bad address", "x@", "<user@localdomain>",
                             "Name <user@localdomain>", "a..b@localdomain", "ü@localdomain"])
to_values = st.lists(addresses, min_size=0, max_size=4).map(", ".join)
bodies = st.one_of(text_pieces, st.lists(st.sampled_from(["line", "é", "From x", "x" * 80,
                                                          "", " "]), max_size=5)
                   .map("\n".join))


good_addresses = st.sampled_from([USER, "swe1@localdomain", "A.B+c@LocalDomain",
                                  "Name <user@localdomain>", "<shell@localdomain>"])


@st.composite
def model_answers(draw) -> str:
    """Answers near the plain shape (To, Subject, body) half the time, anything else else."""
    near_plain = draw(st.booleans())
    headers = []
    if near_plain or draw(st.booleans()):
        to = (draw(st.lists(good_addresses, min_size=1, max_size=3)) if near_plain
              else [draw(to_values)])
        headers.append(f"To: {', '.join(to)}")
    if near_plain or draw(st.booleans()):
        subject = draw(words.filter(bool) if near_plain else st.one_of(words, text_pieces))
        headers.append(f"{draw(st.sampled_from(['Subject', 'subject']))}: {subject}")
    for _ in range(draw(st.integers(0, 1 if near_plain else 2))):
        name = draw(st.sampled_from(["Cc", "Bcc", "X-Pop-Shell", "X-Mailcoach-Note", "to",
                                     "SUBJECT", "Date", " folded"]))
        headers.append(f"{name}: {draw(words)}" if name != " folded" else " more words")
    if not near_plain:
        draw(st.randoms()).shuffle(headers)
    answer = "\n".join(headers) + "\n\n" + draw(bodies)
    return f"```\n{answer}\n```" if draw(st.booleans()) else answer


@st.composite
def incoming_messages(draw) -> bytes:
    lines = [f"From: {USER}", f"To: {AGENT}"]
    subject = draw(st.one_of(words, text_pieces.map(lambda t: t.replace("\n", " ")
                                                    .replace("\r", " "))))
    lines.append(f"Subject: {subject}")
    if draw(st.booleans()):
        lines.append(f"Message-ID: <{draw(st.sampled_from(['m1', 'a.b', 'x' * 70]))}@localdomain>")
    refs = draw(st.lists(st.sampled_from(["<r1@localdomain>", "<r2@x>", "<" + "r" * 30 + "@x>"]),
                         max_size=45))
    if refs:
        lines.append("References: " + " ".join(refs))
    return ("\n".join(lines) + "\n\nQuestion?\n").encode()


stamps = st.lists(st.tuples(st.sampled_from(["M-Model", "M-Cost", "M-Tokens-Input"]),
                            st.one_of(st.sampled_from(["openai/gpt-4o", "0.000012", "12",
                                                       "ollama/llama3.2:1b", "x" * 80]),
                                      words)),
                  max_size=4)
answers_to = st.sampled_from([None, "<q1@localdomain>", "<r1@localdomain>"])


def both(text: str, raw_incoming: bytes, stamp, answer):
    """(fast, slow): each the reply's bytes or the type of what it raised; fast may be None."""
    incoming = read_message(raw_incoming)

    def answers(reply):
        return answer

    def outcome(make):
        try:
            return make()
        except Exception as exc:  # email refuses some values (a folded Message-ID)
            return type(exc)

    fast = outcome(lambda: plain_reply(text, agent=AGENT, default_to=USER, incoming=incoming,
                                       answers=answers if answer else None, stamp=stamp))
    slow = outcome(lambda: model_reply(
        text, agent=AGENT, default_to=USER, default_subject="the question",
        robots=frozenset({"shell@localdomain"}), incoming=incoming,
        answers=answers if answer else None, stamp=stamp).as_bytes())
    return fast, slow


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model_answers(), incoming_messages(), stamps, answers_to)
@example("To: user@localdomain\nSubject: hello\n\nhello",
         f"From: {USER}\nSubject: hi\nMessage-ID: <m1@localdomain>\n\nSay hello.\n".encode(),
         [("M-Model", "openai/fake"), ("M-Cost", "0.000000")], None)
def test_a_plain_reply_is_the_email_packages_bytes(text, raw_incoming, stamp, answer):
    fast, slow = both(text, raw_incoming, stamp, answer)
    if fast is not None:  # None: the EmailMessage path makes the reply
        assert fast == slow


def test_the_common_answer_takes_the_fast_path():
    # The equality above can only hold where the fast path answers: make sure it does.
    raw = f"From: {USER}\nSubject: hi\nMessage-ID: <m1@localdomain>\n\nSay hello.\n".encode()
    fast, slow = both("To: user@localdomain\nSubject: hello\n\nhello\n", raw,
                      [("M-Model", "openai/fake")], None)
    assert isinstance(fast, bytes) and fast == slow
    assert b"In-Reply-To: <m1@localdomain>\n" in fast


def test_answers_it_cannot_write_go_the_email_way():
    raw = f"From: {USER}\nSubject: hi\n\nSay hello.\n".encode()
    for text in ("just a body", "To: user@localdomain\nCc: swe1@localdomain\nSubject: s\n\nb",
                 "To: nobody\nSubject: s\n\nb", f"To: {AGENT}\nSubject: s\n\nb",
                 "To: user@localdomain\n\nno subject", "To: user@localdomain\nSubject: s\n\n"
                 + "x" * 100):
        assert both(text, raw, [], None)[0] is None, text


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["To", "From", "Subject", "References", "M-Model", "Content-Type"]),
       st.one_of(words, text_pieces, to_values))
def test_a_header_line_is_what_policy_default_folds(name, value):
    def exact() -> bytes:
        return policy.default.fold_binary(name, policy.default.header_store_parse(name, value)[1])
    try:
        expected: bytes | type[Exception] = exact()
    except Exception as exc:  # email raises on some values ("x@"): the same must be raised
        expected = type(exc)
    if isinstance(expected, bytes):
        assert header_line(name, value) == expected
    else:
        with pytest.raises(expected):
            header_line(name, value)


@given(bodies)
def test_a_body_is_what_set_content_writes(body):
    from email.message import EmailMessage

    message = EmailMessage()
    message.set_content(body)
    encoded = text_body(body)
    if encoded is not None:
        assert message["Content-Transfer-Encoding"] == encoded[0]
        assert message.as_bytes().partition(b"\n\n")[2] == encoded[1]
