"""Thunderbird's saved passwords (``logins.json`` + ``key4.db``) made with NSS itself.

Thunderbird keeps no password in prefs: the login manager stores it in
``logins.json``, encrypted by NSS's SDR (``PK11SDR_Encrypt``) with a key that
lives in ``key4.db``. With no primary password that key is protected by the
empty password, so a test can make both files by calling the NSS library
Thunderbird ships (``/usr/lib/thunderbird/libnss3.so``) through ctypes: the
same code, the same formats, nothing reimplemented. The tool ``pwdecrypt``
could read them back; Thunderbird logging in without a prompt is the test.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

__all__ = ["NSS_LIBRARY", "write_logins"]

NSS_LIBRARY = Path("/usr/lib/thunderbird/libnss3.so")


class _SECItem(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint), ("data", ctypes.POINTER(ctypes.c_ubyte)),
                ("len", ctypes.c_uint)]


def _encryptor(nss: ctypes.CDLL):
    nss.PK11_GetInternalKeySlot.restype = ctypes.c_void_p
    nss.PK11_NeedUserInit.argtypes = [ctypes.c_void_p]
    nss.PK11_InitPin.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    nss.PK11_Authenticate.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    nss.PK11_FreeSlot.argtypes = [ctypes.c_void_p]
    nss.PK11SDR_Encrypt.argtypes = [ctypes.POINTER(_SECItem)] * 3 + [ctypes.c_void_p]
    nss.SECITEM_ZfreeItem.argtypes = [ctypes.POINTER(_SECItem), ctypes.c_int]

    def encrypt(text: str) -> str:
        raw = text.encode()
        buffer = (ctypes.c_ubyte * len(raw)).from_buffer_copy(raw)
        plain = _SECItem(0, buffer, len(raw))
        key_id, out = _SECItem(0, None, 0), _SECItem(0, None, 0)
        if nss.PK11SDR_Encrypt(ctypes.byref(key_id), ctypes.byref(plain), ctypes.byref(out),
                               None) != 0:
            raise RuntimeError("PK11SDR_Encrypt failed")
        try:
            return base64.b64encode(ctypes.string_at(out.data, out.len)).decode()
        finally:
            nss.SECITEM_ZfreeItem(ctypes.byref(out), 0)

    return encrypt


def write_logins(profile: Path, logins: list[tuple[str, str, str]]) -> None:
    """Save ``(origin, username, password)`` logins in ``profile`` as Thunderbird would.

    ``origin`` is what Thunderbird looks up: ``imap://HOST`` for an incoming
    server, ``smtp://HOST`` for an outgoing one (no port, no user). The NSS
    calls run in a child process whose ``LD_LIBRARY_PATH`` is Thunderbird's
    directory, as in Thunderbird: its NSS is newer than the system's.
    """
    env = {**os.environ, "LD_LIBRARY_PATH": str(NSS_LIBRARY.parent)}
    result = subprocess.run([sys.executable, __file__, str(profile)], env=env, text=True,
                            input=json.dumps(logins), capture_output=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"writing logins failed: {result.stderr}")


def _write_logins_here(profile: Path, logins: list[tuple[str, str, str]]) -> None:
    nss = ctypes.CDLL(str(NSS_LIBRARY))
    if nss.NSS_InitReadWrite(f"sql:{profile}".encode()) != 0:
        raise RuntimeError(f"NSS_InitReadWrite failed for {profile}")
    encrypt = _encryptor(nss)  # declares the C signatures too
    try:
        slot = nss.PK11_GetInternalKeySlot()
        try:
            if nss.PK11_NeedUserInit(slot):  # a new key4.db: no primary password
                nss.PK11_InitPin(slot, None, b"")
            nss.PK11_Authenticate(slot, 1, None)
            now = int(time.time() * 1000)
            entries = [{
                "id": number, "hostname": origin, "httpRealm": origin, "formSubmitURL": None,
                "usernameField": "", "passwordField": "",
                "encryptedUsername": encrypt(user), "encryptedPassword": encrypt(password),
                "guid": f"{{{uuid.uuid4()}}}", "encType": 1, "timeCreated": now,
                "timeLastUsed": now, "timePasswordChanged": now, "timesUsed": 1,
            } for number, (origin, user, password) in enumerate(logins, start=1)]
        finally:
            nss.PK11_FreeSlot(slot)
    finally:
        nss.NSS_Shutdown()
    (profile / "logins.json").write_text(json.dumps({
        "nextId": len(logins) + 1, "logins": entries, "potentiallyVulnerablePasswords": [],
        "dismissedBreachAlertsByLoginGUID": {}, "version": 3}))


if __name__ == "__main__":
    _write_logins_here(Path(sys.argv[1]), [tuple(x) for x in json.load(sys.stdin)])
