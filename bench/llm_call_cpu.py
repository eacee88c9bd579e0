"""CPU per model call: ``LiteLLMModel.complete`` to the scripted server, against bare HTTP.

    python bench/llm_call_cpu.py [--calls 200] [--concurrent 100] [--delay 0.2]

The scripted OpenAI-compatible server of the tests runs in a child process, so
the CPU counted here (``time.process_time()``: every thread of this process,
litellm's worker threads included) is the caller's alone. Three ways to make
the same call, each measured for ``--calls`` calls in a row (answered at once)
and for ``--concurrent`` calls at once (the fan-out of one message to that many
agents, each answer ``--delay`` seconds late):

- ``LiteLLMModel.complete``: what agents use (the direct route for a spec with
  ``@api_base``: litellm's HTTP layer without ``acompletion``'s bookkeeping);
- the same through ``litellm.acompletion`` (``LiteLLMModel(direct=False)``),
  what every call paid before;
- a bare ``httpx`` POST of the same JSON: no gateway at all.

CPU time is noisy on a loaded machine (and wall time more so); the Python
function calls per model call (all threads, counted over a few calls with
``sys.setprofile``) do not depend on the load. ``--profile FILE`` writes a
cProfile of the direct route's calls in a row to FILE (``python -m pstats FILE``).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import cProfile
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, even under -P
from _common import PYTHON, ROOT, child_env, require_install

# The child: the tests' scripted server; each line on stdin sets the answers' delay.
_SERVER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("fakellm", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["fakellm"] = module
spec.loader.exec_module(module)
with module.ScriptedModelServer() as server:
    server.responder = lambda request: "To: user@localdomain\\nSubject: hello\\n\\nhello"
    print(server.spec(), flush=True)
    for line in sys.stdin:  # until the parent closes stdin
        server.delay = float(line)
        print("ok", flush=True)
"""

#: calls counted with sys.setprofile (slow: it sees every Python call)
_COUNTED_CALLS = 10

Call = Callable[[], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Figures:
    cpu_ms: float  # per call, in a row
    wall_ms: float  # per call, in a row
    cpu_at_once_ms: float  # per call, all at once
    wall_at_once_ms: float  # for all of them
    python_calls: float  # Python function calls per model call


def start_model_server() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([*PYTHON, "-c", _SERVER, str(ROOT / "tests" / "fakellm.py")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=child_env())
    spec = proc.stdout.readline().strip() if proc.stdout else ""
    if not spec:
        raise SystemExit("the scripted model server did not start")
    return proc, spec


def set_delay(proc: subprocess.Popen, seconds: float) -> None:
    """The scripted server's answers wait ``seconds`` from now on."""
    assert proc.stdin and proc.stdout
    proc.stdin.write(f"{seconds}\n")
    proc.stdin.flush()
    if proc.stdout.readline().strip() != "ok":
        raise SystemExit("the scripted model server stopped")


async def python_calls(one: Call) -> float:
    """Python function calls per ``one()``, in this thread and the loop's executor."""
    count = 0

    def counter(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal count
        if event == "call":
            count += 1

    loop = asyncio.get_running_loop()
    # litellm.acompletion prepares each request in the default executor: count there too.
    counting = concurrent.futures.ThreadPoolExecutor(initializer=sys.setprofile,
                                                     initargs=(counter,))
    loop.set_default_executor(counting)
    sys.setprofile(counter)
    try:
        for _ in range(_COUNTED_CALLS):
            await one()
    finally:
        sys.setprofile(None)
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor())
        counting.shutdown(wait=False)
    return count / _COUNTED_CALLS


async def measure(server: subprocess.Popen, args: argparse.Namespace, one: Call) -> Figures:
    set_delay(server, 0)
    for _ in range(args.warmup):
        await one()
    calls = await python_calls(one)  # before the calls at once fill the connection pool
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(args.calls):
        await one()
    cpu_ms = (time.process_time() - cpu) / args.calls * 1000
    wall_ms = (time.perf_counter() - wall) / args.calls * 1000
    set_delay(server, args.delay)
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(args.concurrent)))
    cpu_at_once = (time.process_time() - cpu) / args.concurrent * 1000
    wall_at_once = (time.perf_counter() - wall) * 1000
    set_delay(server, 0)
    return Figures(cpu_ms, wall_ms, cpu_at_once, wall_at_once, calls)


async def through_mailcoach(server: subprocess.Popen, args: argparse.Namespace, spec: str,
                            direct: bool) -> Figures:
    from mailcoach_server.runtime.llm import ChatTurn, LiteLLMModel, ModelPrice

    turns = [ChatTurn("system", "You answer mail."),
             ChatTurn("user", "From: user@localdomain\nSubject: hi\n\nSay hello.")]
    # Priced as agent_fanout prices it, so no default-price warning muddles the output.
    model = LiteLLMModel(prices={spec: ModelPrice(0.0, 0.0)}, max_in_flight=args.concurrent,
                         retries=0, timeout=60, direct=direct)
    profiler = cProfile.Profile() if args.profile and direct else None
    try:
        if profiler:  # the calls in a row only: measure() runs them first
            await model.complete(turns, model=spec)
            profiler.enable()
            for _ in range(args.calls):
                await model.complete(turns, model=spec)
            profiler.disable()
            profiler.dump_stats(args.profile)
        return await measure(server, args, lambda: model.complete(turns, model=spec))
    finally:
        await model.aclose()


async def bare_http(server: subprocess.Popen, args: argparse.Namespace, spec: str) -> Figures:
    import httpx

    from mailcoach_server.runtime.llm import split_model

    name, api_base = split_model(spec)
    body = {"model": name.split("/", 1)[1], "messages": [
        {"role": "system", "content": "You answer mail."},
        {"role": "user", "content": "From: user@localdomain\nSubject: hi\n\nSay hello."}]}
    async with httpx.AsyncClient(base_url=api_base or "", timeout=60,
                                 limits=httpx.Limits(max_connections=1000)) as client:
        async def one() -> object:
            response = await client.post("/chat/completions", json=body)
            return response.raise_for_status().json()["choices"][0]["message"]["content"]

        return await measure(server, args, one)


async def run(args: argparse.Namespace, server: subprocess.Popen, spec: str) -> None:
    from mailcoach_server.runtime.llm import ChatTurn, LiteLLMModel, ModelPrice

    started = time.perf_counter()
    first = LiteLLMModel(prices={spec: ModelPrice(0.0, 0.0)}, retries=0, timeout=60)
    await first.complete([ChatTurn("user", "hi")], model=spec)
    await first.aclose()
    print(f"first call (imports litellm): {time.perf_counter() - started:.2f} s")
    rows = [("LiteLLMModel.complete", await through_mailcoach(server, args, spec, True)),
            ("via litellm.acompletion", await through_mailcoach(server, args, spec, False)),
            ("bare httpx POST", await bare_http(server, args, spec))]
    print(f"{args.calls} calls in a row, answered at once:")
    for name, row in rows:
        print(f"  {name:24s} CPU {row.cpu_ms:6.2f} ms/call  wall {row.wall_ms:7.1f} ms/call  "
              f"{row.python_calls:6.0f} Python calls/call")
    print(f"{args.concurrent} calls at once, model latency {args.delay * 1000:.0f} ms:")
    for name, row in rows:
        print(f"  {name:24s} CPU {row.cpu_at_once_ms:6.2f} ms/call  "
              f"all answered in {row.wall_at_once_ms:7.1f} ms")
    direct, through, _ = (row for _, row in rows)
    print(f"CPU per call, direct route / acompletion: {direct.cpu_ms / through.cpu_ms:.2f} in a "
          f"row, {direct.cpu_at_once_ms / through.cpu_at_once_ms:.2f} at once; Python calls "
          f"{direct.python_calls / through.python_calls:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls one after another")
    parser.add_argument("--concurrent", type=int, default=100, help="calls at once")
    parser.add_argument("--delay", type=float, default=0.2, help="model latency, seconds")
    parser.add_argument("--warmup", type=int, default=5, help="calls before measuring")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the measured calls")
    args = parser.parse_args()
    if args.calls < 1 or args.concurrent < 1 or args.warmup < 0:
        parser.error("--calls and --concurrent must be at least 1, --warmup at least 0")
    require_install()
    server, spec = start_model_server()
    try:
        asyncio.run(run(args, server, spec))
    finally:
        if server.stdin:
            server.stdin.close()
        server.wait(30)
        if server.stdout:
            server.stdout.close()


if __name__ == "__main__":
    main()
