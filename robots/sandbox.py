"""Where a shell command runs: the environment it gets and the bubblewrap sandbox.

The environment is built from an allow list, never by removing secrets:
``PATH``, ``HOME``, ``LANG``, ``LC_*``, ``TERM``, ``TZ`` and the names a
robot's ``env`` option lists. Anything else in the server's environment
(provider keys, tokens, passwords under any name) stays out.

The sandbox (``Sandbox.bwrap``) is bubblewrap with its own pid, network,
IPC and UTS namespaces, a read-only /usr and a few files of /etc, fresh
/proc, /dev and /tmp, and only the working directory writable: no other
file of the data directory (``login``, ``trace``, ``index.sqlite``) exists
inside. bwrap itself starts with an empty environment, so that its
``/proc/<pid>/environ`` shows nothing either. The command runs as uid
65534 ("nobody") with no capabilities:

- as an ordinary user, bwrap maps that uid onto the caller's in a user
  namespace;
- as root, a uid mapped in a user namespace would still be root on the
  host (a file it makes setuid is setuid root outside), so bwrap sets the
  sandbox up with root's rights and ``setpriv`` really becomes 65534,
  drops every capability and sets no_new_privs before the command starts.
  The working directory is then given to 65534.

``Sandbox.choose`` turns the ``sandbox`` option (auto, bwrap, none) into
one of these, and refuses an unsandboxed shell for root unless told to.
This module runs no commands except a one-off ``true`` to check that bwrap
works here; it knows nothing about mail.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mailcoach_server.errors import ConfigError

__all__ = [
    "ALLOWED_NAMES",
    "SANDBOX_PATH",
    "SANDBOX_UID",
    "Sandbox",
    "allowed_environment",
    "bwrap_argv",
    "bwrap_problem",
]

#: variables a command always gets from the server's environment (plus ``LC_*``)
ALLOWED_NAMES: Final = ("PATH", "HOME", "LANG", "TERM", "TZ")
_ALLOWED_PREFIX: Final = "LC_"
#: inside the bubblewrap sandbox the command runs as "nobody"
SANDBOX_UID: Final = 65534
SANDBOX_PATH: Final = "/usr/local/bin:/usr/bin:/bin"
_PROBE_TIMEOUT: Final = 20.0
# What a shell in the sandbox needs from /etc: names, DNS, the dynamic
# linker's cache, Debian's alternatives symlinks (awk, editor, ...) and CA
# certificates. Nothing else (no shadow, no ssh keys) is visible.
_SANDBOX_ETC: Final = (
    "alternatives",
    "ca-certificates",
    "group",
    "host.conf",
    "hostname",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "passwd",
    "protocols",
    "resolv.conf",
    "services",
    "ssl",
    "timezone",
)
# Top-level directories that merged-/usr systems make symlinks into /usr.
_SANDBOX_TOP: Final = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


def allowed_environment(
    base: Mapping[str, str] | None = None,
    *,
    names: Iterable[str] = (),
    values: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The allow-listed part of ``base`` (default ``os.environ``), then ``values``.

    Args:
        base: the environment to pick from.
        names: more variable names to take from ``base`` when set there.
        values: variables set to these values (they win over ``base``).
    """
    source = os.environ if base is None else base
    wanted = {*ALLOWED_NAMES, *names}
    env = {
        name: value
        for name, value in source.items()
        if name in wanted or name.startswith(_ALLOWED_PREFIX)
    }
    env.update(values or {})
    return env


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _setpriv() -> str | None:
    """setpriv, if the sandbox can see it (it must live below /usr)."""
    found = shutil.which("setpriv", path="/usr/bin:/usr/sbin:/bin:/sbin")
    if found is None:
        return None
    resolved = os.path.realpath(found)
    return resolved if resolved.startswith("/usr/") else None


def bwrap_argv(
    workdir: Path,
    *,
    network: bool = False,
    env: Mapping[str, str] | None = None,
    bwrap: str = "bwrap",
    setpriv: str | None = None,
) -> list[str]:
    """The bubblewrap command line that runs a command confined to ``workdir``.

    Args:
        workdir: the only writable directory, at the same path inside.
        network: keep the host's network (loopback included: the server's
            own SMTP port is then reachable).
        env: the command's environment; PATH and HOME (= ``workdir``) by default.
        bwrap: the bwrap binary.
        setpriv: when given (running as root), bwrap keeps no user namespace
            and this setpriv drops to ``SANDBOX_UID`` before the command.
    """
    workdir = Path(workdir).resolve()
    argv = [bwrap, "--die-with-parent", "--new-session"]
    if setpriv is None:
        argv += ["--unshare-all", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
        argv += ["--cap-drop", "ALL"]
        if network:
            argv.append("--share-net")
    else:
        argv += ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
        if not network:
            argv.append("--unshare-net")
    argv += ["--clearenv"]
    inner = {"PATH": SANDBOX_PATH, "HOME": str(workdir), **(env or {})}
    for name, value in inner.items():
        argv += ["--setenv", name, value]
    argv += ["--ro-bind", "/usr", "/usr"]
    for name in _SANDBOX_TOP:
        path = Path("/", name)
        if path.is_symlink():
            argv += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            argv += ["--ro-bind", str(path), str(path)]
    argv += ["--perms", "0755", "--dir", "/etc"]  # bwrap's own parents are 0700
    for name in _SANDBOX_ETC:
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    argv += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]
    # The parents of the working directory, traversable by the command (as
    # root, bwrap makes missing parents 0700, which locks "nobody" out).
    for parent in reversed(workdir.parents):
        if parent != Path("/") and parent != Path("/tmp"):
            argv += ["--perms", "0755", "--dir", str(parent)]
    # After --tmpfs /tmp, so that a working directory below /tmp shows through.
    argv += ["--bind", str(workdir), str(workdir), "--chdir", str(workdir), "--"]
    if setpriv is not None:
        uid = str(SANDBOX_UID)
        argv += [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        argv += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    return argv


@functools.cache
def bwrap_problem(bwrap: str, setpriv: str | None) -> str | None:
    """Why bwrap cannot run a command here (None: it can). Checked once per binary."""
    with tempfile.TemporaryDirectory(prefix="mailcoach-bwrap-") as scratch:
        workdir = Path(scratch, "work")
        workdir.mkdir()
        if setpriv is not None:
            os.chown(workdir, SANDBOX_UID, SANDBOX_UID)
        argv = bwrap_argv(workdir, bwrap=bwrap, setpriv=setpriv) + ["/bin/sh", "-c", "touch ok"]
        try:
            done = subprocess.run(
                argv, env={}, capture_output=True, text=True, timeout=_PROBE_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{bwrap}: {exc}"
        if done.returncode != 0 or not (workdir / "ok").exists():
            said = (done.stderr or done.stdout).strip().splitlines()
            return said[-1] if said else f"{bwrap} exited with {done.returncode}"
    return None


@dataclass(frozen=True, slots=True)
class Sandbox:
    """How commands are started: under bwrap (``bwrap`` set) or directly.

    Attributes:
        bwrap: the bwrap binary, None for no sandbox.
        setpriv: the setpriv binary when running as root under bwrap.
        network: the sandbox keeps the host's network.
        reason: why there is no sandbox (for the banner), "" otherwise.
    """

    bwrap: str | None = None
    setpriv: str | None = None
    network: bool = False
    reason: str = ""

    @property
    def mode(self) -> str:
        """What the banner shows: ``sandbox: bwrap`` or ``sandbox: none (unsandboxed)``."""
        if self.bwrap is None:
            return "sandbox: none (unsandboxed" + (f": {self.reason})" if self.reason else ")")
        return "sandbox: bwrap" + (", network" if self.network else "")

    @classmethod
    def choose(
        cls,
        requested: str,
        *,
        network: bool,
        allow_unsandboxed_root: bool,
        key: str,
        switch: str,
    ) -> Sandbox:
        """The sandbox for the ``sandbox`` option ``requested`` (auto, bwrap or none).

        ``key`` names the option and ``switch`` the way to allow root
        without a sandbox, in error messages.

        Raises:
            ConfigError: bwrap asked for but missing or not working here, or
                no sandbox while running as root without ``allow_unsandboxed_root``.
        """
        root = _running_as_root()
        reason = "sandbox: none in the config"
        if requested in ("auto", "bwrap"):
            bwrap = shutil.which("bwrap")
            setpriv = _setpriv() if root else None
            problem: str | None
            if bwrap is None:
                problem = "bubblewrap is not installed (apt install bubblewrap)"
            elif root and setpriv is None:
                problem = "setpriv (util-linux) is needed to run bwrap as root"
            else:
                problem = bwrap_problem(bwrap, setpriv)
            if problem is None:
                assert bwrap is not None
                return cls(bwrap=bwrap, setpriv=setpriv, network=network)
            if requested == "bwrap":
                raise ConfigError(f"{key}: bwrap cannot be used: {problem}")
            reason = problem
        if root and not allow_unsandboxed_root:
            raise ConfigError(
                f"{key}: commands would run as root without a sandbox ({reason}). "
                "Install bubblewrap (apt install bubblewrap), run mailcoach as an "
                f"ordinary user, or set {switch}"
            )
        return cls(reason=reason if requested == "auto" else "")

    def environment(
        self, workdir: Path, *, names: Iterable[str] = (), values: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """The command's environment: the allow list, ``names`` and ``values``.

        In the sandbox PATH is the system's and HOME the working directory
        (the server's may not exist there); ``values`` may still set them.
        """
        base: Mapping[str, str] = os.environ
        if self.bwrap is not None:
            base = {**os.environ, "PATH": SANDBOX_PATH, "HOME": str(Path(workdir).resolve())}
        return allowed_environment(base, names=names, values=values)

    def launch(self, workdir: Path, env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
        """The argv prefix and the environment of the process to start.

        Under bwrap, ``env`` goes inside with ``--setenv`` and bwrap itself
        gets an empty environment.
        """
        if self.bwrap is None:
            return [], dict(env)
        argv = bwrap_argv(
            workdir, network=self.network, env=env, bwrap=self.bwrap, setpriv=self.setpriv
        )
        return argv, {}

    def prepare(self, workdir: Path) -> None:
        """Create ``workdir``; under bwrap as root, give it to the sandbox's user (blocking)."""
        workdir.mkdir(parents=True, exist_ok=True)
        if self.setpriv is not None and workdir.stat().st_uid != SANDBOX_UID:
            os.chown(workdir, SANDBOX_UID, SANDBOX_UID)
