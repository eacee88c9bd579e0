"""The runtime's own cost per agent turn: context, reply, store, with an instant model.

    python bench/agent_turns.py [--turns 300] [--agents 20]

In one process, as ``mailcoach serve`` runs it: the engine, the store (fsync
on) and one worker per agent, with a model that answers at once, so what is
measured is mailcoach's work per turn (reading pending mail and memory,
building the context, parsing the model's mail, submitting the reply with
its delivery marked done in one transaction), never a model's latency.

* a conversation: one agent, ``--turns`` messages one after another, each
  answered before the next (memory grows by two messages a turn);
* a burst: ``--agents`` agents, ``--turns`` messages spread over them, all
  submitted at once.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, even under -P
from _common import require_install, scratch


class InstantModel:
    """A ChatModel that answers the user at once, with token counts as a provider would."""

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, turns: Sequence, *, model: str):  # noqa: ANN201
        from mailcoach_server.runtime.llm import Completion

        self.calls += 1
        return Completion(text="To: user@localdomain\nSubject: answer\n\nok\n", model=model,
                          tokens_input=sum(len(t.content) for t in turns) // 4,
                          tokens_output=3, cost=0.0, seconds=0.0)


def message(to: str, number: int) -> bytes:
    mail = EmailMessage()
    mail["From"] = "user@localdomain"
    mail["To"] = to
    mail["Subject"] = f"question {number}"
    mail.set_content(f"Question number {number}.\n")
    return mail.as_bytes()


async def run(turns: int, agents: int) -> None:
    from mailcoach_server.config import load_config
    from mailcoach_server.runtime.engine import Engine
    from mailcoach_server.store.store import Store

    work = scratch()
    names = [f"a{i}@localdomain" for i in range(agents)]
    path = work / "mailcoach.yaml"
    path.write_text(yaml.safe_dump({
        "data_dir": str(work / "data"), "models": {"default": "openai/instant"},
        "agents": {"parties": {name: {} for name in ["solo@localdomain", *names]}},
    }))
    config = load_config(path)
    store = Store.open(config.data_dir)
    model = InstantModel()
    engine = Engine(config, store, model=model)
    await engine.start(shipped_memory=False)
    try:
        started = time.perf_counter()
        for number in range(turns):
            await engine.submit(message("solo@localdomain", number), origin="user")
            await asyncio.wait_for(engine.wait_idle(), 120)
        serial = time.perf_counter() - started
        print(f"conversation: {turns} turns of one agent in {serial:.2f} s: "
              f"{serial / turns * 1000:.2f} ms a turn (memory grew to {2 * turns} messages)")
        started = time.perf_counter()
        for number in range(turns):
            await engine.submit(message(names[number % agents], number), origin="user")
        await asyncio.wait_for(engine.wait_idle(), 120)
        burst = time.perf_counter() - started
        print(f"burst: {turns} messages to {agents} agents answered in {burst:.2f} s: "
              f"{turns / burst:.0f} turns/s")
        print(f"model calls: {model.calls}")
    finally:
        await engine.aclose()
        await store.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--agents", type=int, default=20)
    args = parser.parse_args()
    require_install()
    asyncio.run(run(args.turns, args.agents))


if __name__ == "__main__":
    main()
