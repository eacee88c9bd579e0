"""The user's login: a random password in a file only its owner can read.

Created at first start (mode 0600, written atomically); SMTP AUTH and IMAP
LOGIN check against it. The user name is the user's mail address (its
local part alone is accepted too, as most servers do).
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from .errors import StoreError

__all__ = ["Credentials", "LOGIN_FILE", "new_password"]

LOGIN_FILE = "login"


@dataclass(frozen=True, slots=True)
class Credentials:
    user: str
    password: str
    path: Path

    @classmethod
    def load_or_create(cls, data_dir: Path, user: str) -> Credentials:
        path = data_dir / LOGIN_FILE
        try:
            if not path.exists():
                tmp = path.with_name(LOGIN_FILE + ".tmp")
                # A stale temp file keeps its mode under O_CREAT: remove it, create anew.
                tmp.unlink(missing_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(new_password() + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)  # someone loosened it; a login is not for sharing
            password = path.read_text("utf-8").strip()
        except OSError as exc:
            raise StoreError(f"cannot use the login file {path}: {exc.strerror}") from None
        if not password:
            raise StoreError(f"the login file {path} is empty; delete it to get a new password")
        return cls(user, password, path)

    def check(self, login: str, password: str) -> bool:
        login = login.strip().lower()
        user_ok = login in (self.user, self.user.partition("@")[0])
        # Compare in constant time even when the name is wrong.
        password_ok = hmac.compare_digest(password.encode(), self.password.encode())
        return user_ok and password_ok


def new_password() -> str:
    """144 random bits, URL-safe, never starting with ``-`` (a command line such as
    ``swaks --auth-password PASSWORD`` would read it as an option)."""
    while True:
        password = secrets.token_urlsafe(18)
        if password[0] not in "-_":
            return password
