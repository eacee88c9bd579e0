"""The public API of the package, pinned: changing it is a decision, not an accident."""

import subprocess
import sys

import mailcoach_server


def test_exported_members():
    assert sorted(mailcoach_server.__all__) == [
        "Config", "ConfigError", "Engine", "MailcoachError", "ModelError", "Server", "Store",
        "SubmitError", "__version__", "load_config", "running",
    ]
    for name in mailcoach_server.__all__:
        assert getattr(mailcoach_server, name) is not None


def test_importing_the_package_is_cheap():
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, mailcoach_server, mailcoach_server.cli; "
         "print(sorted(m for m in ('litellm', 'aiosmtpd', 'yaml') if m in sys.modules))"],
        capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "[]"
