"""CPU per model call: ``LiteLLMModel.complete`` to the scripted server, against bare HTTP.

    python bench/llm_call_cpu.py [--calls 200] [--concurrent 100] [--delay 0.2]

The scripted OpenAI-compatible server of the tests runs in a child process, so
the CPU counted here (``time.process_time()``: every thread of this process,
litellm's logging threads included) is the caller's alone. Three figures, each
per call: N calls one after another, ``--concurrent`` calls at once (the
fan-out of one message to that many agents, each answer ``--delay`` seconds
late), and the same calls as a bare ``httpx`` POST (the HTTP client litellm
uses for OpenAI-compatible providers): the floor no gateway can go below. CPU
time is robust on a loaded machine; wall time is printed but is not.

``--profile FILE`` writes a cProfile of the sequential calls to FILE
(``python -m pstats FILE``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common, even under -P
from _common import PYTHON, ROOT, child_env, require_install

# The child: the tests' scripted server, answering every request after a delay.
_SERVER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("fakellm", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["fakellm"] = module
spec.loader.exec_module(module)
with module.ScriptedModelServer() as server:
    server.responder = lambda request: "To: user@localdomain\\nSubject: hello\\n\\nhello"
    print(server.spec(), flush=True)
    for line in sys.stdin:  # each line sets the delay, until the parent closes stdin
        server.delay = float(line)
        print("ok", flush=True)
"""


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


async def measure(server: subprocess.Popen, args: argparse.Namespace,
                  one: Callable[[], Awaitable[object]]) -> tuple[float, float, float, float]:
    """CPU and wall ms per call for ``--calls`` in a row (answered at once), then CPU ms
    per call and wall ms for all of ``--concurrent`` calls at once (``--delay`` late)."""
    calls, concurrent = args.calls, args.concurrent
    set_delay(server, 0)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        await one()
    row = ((time.process_time() - cpu) / calls * 1000, (time.perf_counter() - wall) / calls * 1000)
    set_delay(server, args.delay)
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(concurrent)))
    return (*row, (time.process_time() - cpu) / concurrent * 1000,
            (time.perf_counter() - wall) * 1000)


async def run(args: argparse.Namespace, server: subprocess.Popen, spec: str) -> None:
    import httpx

    from mailcoach_server.runtime.llm import ChatTurn, LiteLLMModel, ModelPrice, split_model

    turns = [ChatTurn("system", "You answer mail."),
             ChatTurn("user", "From: user@localdomain\nSubject: hi\n\nSay hello.")]
    # Priced as agent_fanout prices it, so no default-price warning muddles the output.
    model = LiteLLMModel(prices={spec: ModelPrice(0.0, 0.0)}, max_in_flight=args.concurrent,
                         retries=0, timeout=60)
    started = time.perf_counter()
    await model.complete(turns, model=spec)  # pays the import and the client's creation
    print(f"first call (imports litellm): {time.perf_counter() - started:.2f} s")
    for _ in range(args.warmup):
        await model.complete(turns, model=spec)

    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    cpu, wall, cpu_at_once, wall_at_once = await measure(
        server, args, lambda: model.complete(turns, model=spec))
    if profiler:
        profiler.disable()
        profiler.dump_stats(args.profile)
    await model.aclose()

    name, api_base = split_model(spec)
    body = {"model": name.split("/", 1)[1], "messages": [t.as_dict() for t in turns]}
    async with httpx.AsyncClient(base_url=api_base or "", timeout=60,
                                 limits=httpx.Limits(max_connections=1000)) as client:
        async def bare() -> object:
            response = await client.post("/chat/completions", json=body)
            return response.raise_for_status().json()["choices"][0]["message"]["content"]

        await bare()
        floor = await measure(server, args, bare)

    print(f"{args.calls} calls in a row, answered at once:")
    print(f"  LiteLLMModel.complete  CPU {cpu:6.2f} ms/call  wall {wall:7.1f} ms/call")
    print(f"  bare httpx POST        CPU {floor[0]:6.2f} ms/call  wall {floor[1]:7.1f} ms/call")
    print(f"{args.concurrent} calls at once, model latency {args.delay * 1000:.0f} ms:")
    print(f"  LiteLLMModel.complete  CPU {cpu_at_once:6.2f} ms/call  "
          f"all answered in {wall_at_once:7.1f} ms")
    print(f"  bare httpx POST        CPU {floor[2]:6.2f} ms/call  "
          f"all answered in {floor[3]:7.1f} ms")
    print(f"litellm's CPU over bare HTTP: {cpu - floor[0]:.2f} ms/call in a row, "
          f"{cpu_at_once - floor[2]:.2f} ms/call at once")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls one after another")
    parser.add_argument("--concurrent", type=int, default=100, help="calls at once")
    parser.add_argument("--delay", type=float, default=0.2, help="model latency, seconds")
    parser.add_argument("--warmup", type=int, default=5, help="calls before measuring")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the measured calls")
    args = parser.parse_args()
    if args.calls < 1 or args.concurrent < 1:
        parser.error("--calls and --concurrent must be at least 1")
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
