"""The wheel, installed non-editable and run from another directory, serves with its defaults."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import mailcoach_server

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_defaults_and_serves_from_elsewhere(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                    str(ROOT)], check=True, timeout=300, capture_output=True)
    wheel = next(wheels.glob("mailcoach-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "mailcoach_server/defaults/default.yaml" in names
    assert "mailcoach_server/defaults/memory/swe1@localdomain.mbox" in names
    assert "mailcoach_robots/shell.py" in names
    assert not any(n.startswith("tests/") for n in names)
    metadata = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("METADATA"))).decode()
    assert f"Version: {mailcoach_server.__version__}" in metadata
    assert "aioimaplib" not in re.findall(r"^Requires-Dist: (\S+)(?!.*extra)", metadata, re.M)

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, timeout=300, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from mailcoach_server.cli import main; "
         "sys.exit(main(sys.argv[1:]))", "serve", "--smtp-port", "0", "--imap-port", "0"],
        cwd=elsewhere, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        banner = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            banner.append(line)
            if line.startswith("ready"):
                break
        text = "".join(banner)
        assert "SMTP  127.0.0.1:" in text
        data = elsewhere / "mailcoach-data"
        assert str(data.resolve()) in text
        # The shipped memory of swe1 came from the installed wheel, not this checkout.
        assert (data / "swe1@localdomain.mbox").read_text().count("\nFrom: ") == 4
        probe = subprocess.run(
            [sys.executable, "-c", "import mailcoach_server, mailcoach_robots; "
             "print(mailcoach_server.__file__, mailcoach_robots.__file__)"],
            cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
        assert probe.stdout.count(str(target)) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        proc.stdout.close()
        proc.stderr.close()
