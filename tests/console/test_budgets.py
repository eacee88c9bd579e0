"""Budgets in the console with every model: ``--auto --budget`` on a model nobody priced ends.

The real ``mailcoach`` in a subprocess, the scripted model through litellm. The
scripted model is served as ``openai/scripted@...``, a name litellm has no price
for: the original README's ``hosted_vllm/...`` case.
"""

from __future__ import annotations

import pytest

from tests.console.test_console import fortune_task, run
from tests.support import mbox_messages

# A console run imports litellm (seconds; more on a busy machine): bounded, not timed.
PATIENCE = 240


def plays_both(request):
    system = request["messages"][0]["content"]
    if system.startswith("You play user@localdomain"):
        return "To: swe1@localdomain\nSubject: more\n\nBetter, but go on."
    return "To: user@localdomain\nSubject: work\n\nHere is my work."


def model_mail(trace):
    return [m for m in mbox_messages(trace / "trace") if m["M-Model"]]


def test_auto_budget_with_an_unpriced_model_ends(tmp_path, model_server):
    model_server.responder = plays_both
    # At the default price (gpt-4o-mini's: 0.15 in, 0.60 out per million tokens) a call
    # of 50 000 + 10 000 tokens costs 0.0075 + 0.006 = 0.0135 USD: 0.05 allows 4 calls.
    model_server.usage = (50_000, 10_000)
    task = fortune_task(tmp_path / "task.mbox", model_server.spec())
    result = run("-m", str(task), "--auto", "--budget", "0.05", "--model", model_server.spec(),
                 "-t", "auto", cwd=tmp_path, timeout=PATIENCE)
    assert result.returncode == 0, result.stderr
    assert f"no price for {model_server.spec()}: priced at the default $0.15 in" in result.stdout
    assert "budget reached: $0.054000 spent of $0.05" in result.stdout
    assert len(model_server.requests) == 4
    written = model_mail(tmp_path / "auto")
    assert [float(m["M-Cost"]) for m in written] == [pytest.approx(0.0135)] * 4
    assert {m["From"] for m in written} == {"swe1@localdomain", "user@localdomain"}


def test_auto_token_budget_ends_even_at_no_price(tmp_path, model_server):
    model_server.responder = plays_both
    model_server.usage = (20_000, 5_000)  # 25 000 tokens a call: 100 000 allow 4 calls
    config = tmp_path / "c.yaml"
    config.write_text("default_price: null\n")  # unpriced models cost 0 again
    task = fortune_task(tmp_path / "task.mbox", model_server.spec())
    result = run("-m", str(task), "--auto", "--budget-tokens", "100000", "--config",
                 str(config), "--model", model_server.spec(), "-t", "auto", cwd=tmp_path,
                 timeout=PATIENCE)
    assert result.returncode == 0, result.stderr
    assert "costs 0, so only budget_tokens stops it" in result.stdout
    assert "budget reached: $0.000000 spent; 100000 tokens of 100000" in result.stdout
    assert len(model_server.requests) == 4
    written = model_mail(tmp_path / "auto")
    assert [int(m["M-Tokens-Input"]) + int(m["M-Tokens-Output"]) for m in written] == [
        25_000] * 4


def test_auto_needs_a_budget_of_some_kind(tmp_path):
    result = run("--auto", "-q", "whatever.mbox", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--budget-tokens" in result.stderr
    assert not list(tmp_path.iterdir())
