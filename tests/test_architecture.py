"""The layers of docs/ARCHITECTURE.md, checked from the imports in the source.

Every import statement is read with ``ast`` (lazy imports inside functions
too), relative ones resolved, so a module that reaches into a layer it must
not fails here rather than in a review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent.parent / "mailcoach_server"

# Pure protocol cores: bytes and strings in, values out; no sockets, threads or event loop.
PROTOCOL_CORES = [
    "mailcoach_server.addresses", "mailcoach_server.mailtext", "mailcoach_server.store.mbox",
    "mailcoach_server.runtime.headers",
    *(f"mailcoach_server.imap.{name}" for name in (
        "registry", "parser", "grammar", "lexer", "command", "connection", "responses", "wire",
        "utf7", "sequence", "fetch", "bodystructure", "mime", "search", "addresslist")),
]
# What talks to sockets, terminals or the command line: the outer ring.
IO_MODULES = ("mailcoach_server.smtp", "mailcoach_server.imap.server",
              "mailcoach_server.imap.session", "mailcoach_server.imap.commands",
              "mailcoach_server.app", "mailcoach_server.cli", "mailcoach_server.console",
              "mailcoach_server.sendmail", "mailcoach_server.health",
              "mailcoach_server.container", "mailcoach_server.shell_stub",
              "mailcoach_server.memory_cli",
              "mailcoach_server.worker")
IO_LIBRARIES = ("asyncio", "socket", "ssl", "selectors", "threading", "sqlite3", "subprocess",
                "aiosmtpd", "litellm", "http", "smtplib", "imaplib")


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute names, lazy imports included."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)):
            found.add(str(node.args[0].value))
    return found


MODULES = {module_name(p): p for p in SOURCE.rglob("*.py")}


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_layer_lists_name_real_modules():
    for name in PROTOCOL_CORES + list(IO_MODULES):
        assert name in MODULES, f"{name} is named in the layers but does not exist"


@pytest.mark.parametrize("core", PROTOCOL_CORES)
def test_protocol_cores_do_no_io(core):
    imported = imports_of(MODULES[core])
    assert not {m for m in imported if within(m, IO_MODULES)}, core
    assert not {m for m in imported if within(m, IO_LIBRARIES)}, core
    assert not {m for m in imported if within(m, ("mailcoach_server.store.store",
                                                  "mailcoach_server.runtime.engine"))}, core


@pytest.mark.parametrize("name", sorted(n for n in MODULES if within(n, (
    "mailcoach_server.runtime", "mailcoach_server.store", "mailcoach_server.postmaster"))))
def test_runtime_and_store_never_import_the_front_ends(name):
    reached = {m for m in imports_of(MODULES[name]) if within(m, IO_MODULES)}
    assert reached == set(), f"{name} imports {reached}"


#: A party is a step over a Mailbox: these know nothing of where the mail lives.
PARTY_STEPS = ["mailcoach_server.runtime.workers", "mailcoach_server.runtime.party",
               "mailcoach_server.runtime.mailbox"]
HOMES = ("mailcoach_server.store", "mailcoach_server.runtime.engine",
         "mailcoach_server.runtime.router", "mailcoach_server.runtime.local_mailbox",
         "mailcoach_server.runtime.spending", "mailcoach_server.config")


@pytest.mark.parametrize("name", PARTY_STEPS)
def test_party_steps_do_not_know_their_home(name):
    reached = {m for m in imports_of(MODULES[name]) if within(m, HOMES + IO_MODULES)}
    assert reached == set(), f"{name} imports {reached}"


@pytest.mark.parametrize("library, home", [("litellm", ("mailcoach_server.runtime.llm",)),
                                           ("aiosmtpd", ("mailcoach_server.smtp",))])
def test_each_library_has_one_home(library, home):
    users = {n for n, p in MODULES.items() if any(within(m, (library,)) for m in imports_of(p))}
    assert users and all(within(n, home) for n in users), users


def test_the_checker_sees_a_forbidden_import(tmp_path):
    # The checks above can fail: a module that imports the SMTP layer lazily is caught.
    sample = tmp_path / "mailcoach_server" / "runtime" / "sample.py"
    sample.parent.mkdir(parents=True)
    sample.write_text("def f():\n    from ..smtp import handler\n    import asyncio\n")
    global SOURCE
    saved, SOURCE = SOURCE, tmp_path / "mailcoach_server"
    try:
        imported = imports_of(sample)
    finally:
        SOURCE = saved
    assert within("mailcoach_server.smtp.handler", IO_MODULES)
    assert "mailcoach_server.smtp" in imported and "asyncio" in imported


#: What passes SQL: a cursor's or connection's methods, the store's connections.
SQL_CALLS = ("query", "execute", "executemany", "executescript")
STORE_CONNECTIONS = ("_db", "_read")


def sql_uses(path: Path) -> set[str]:
    """SQL calls, store connections reached into and ``sqlite3`` imports in ``path``."""
    found = {m for m in imports_of(path) if within(m, ("sqlite3",))}
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in SQL_CALLS):
            found.add(f".{node.func.attr}() line {node.lineno}")
        elif isinstance(node, ast.Attribute) and node.attr in STORE_CONNECTIONS:
            found.add(f".{node.attr} line {node.lineno}")
    return found


@pytest.mark.parametrize("name", sorted(n for n in MODULES
                                        if not within(n, ("mailcoach_server.store",))))
def test_no_sql_outside_the_store(name):
    # Folders, flags, UIDs, deliveries and costs are the store's named operations.
    assert sql_uses(MODULES[name]) == set(), f"{name} passes SQL"


def test_the_sql_checker_sees_sql(tmp_path):
    sample = tmp_path / "mailcoach_server" / "imap" / "sample.py"
    sample.parent.mkdir(parents=True)
    sample.write_text("import sqlite3\n\nasync def f(store):\n"
                      "    store.query('SELECT 1')\n    await store.execute('DELETE FROM x')\n"
                      "    return store._db\n")
    global SOURCE
    saved, SOURCE = SOURCE, tmp_path / "mailcoach_server"
    try:
        found = sql_uses(sample)
    finally:
        SOURCE = saved
    assert found == {"sqlite3", ".query() line 4", ".execute() line 5", "._db line 6"}


def test_functions_are_short_or_say_why():
    # Issue 11: no function over ~60 lines without a reason in its docstring.
    long_ones = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > 60 and "Long because" not in (ast.get_docstring(node) or ""):
                    long_ones.append(f"{name}.{node.name}: {lines} lines")
    assert long_ones == []
