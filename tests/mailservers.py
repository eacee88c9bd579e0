"""A private Dovecot + Postfix on loopback, for the worker's tests and benchmark.

    with MailServers(domain="company.example") as mail:
        mail.add_user("swe1@company.example", "secret")
        mail.submit("user@company.example", "swe1@company.example", raw)   # SMTP + AUTH
        imap = mail.imap("swe1@company.example")                           # imaplib, logged in

Each instance has its own directory (config, queue, mail, logs), free loopback ports
and virtual users (Dovecot's passwd-file, Postfix's texthash maps). Postfix takes mail
for the domain on a plain port (as an MX would) and on a submission port that needs
SASL AUTH through Dovecot's auth service, and hands it to Dovecot over LMTP. Both run
as this process's children, in the foreground, and are stopped by their PIDs; nothing
under /etc is read for our settings or changed, no system service is started.

With ``tls=True`` both also speak TLS with a certificate of a CA made for the
instance (``openssl req -x509``; :attr:`MailServers.ca_file` is what a client
trusts): Dovecot offers STARTTLS on the IMAP port and implicit TLS on
``imaps_port``; Postfix's submission port requires STARTTLS before AUTH
(``smtpd_tls_security_level = encrypt``) and ``submissions_port`` is implicit
TLS (port 465 style, ``smtpd_tls_wrappermode``). Dovecot's log says ``TLS`` on
each login that used it (:meth:`MailServers.imap_logins`); Postfix stamps
``with ESMTPSA`` (RFC 3848: TLS and AUTH) on mail submitted over TLS.

Postfix needs root (its daemons drop to ``mail_owner``); Dovecot serves mail as
``nobody`` when run as root, as the current user otherwise. A missing program or a
non-root user fails the test under ``CI=true`` and skips it elsewhere
(:func:`require_mail_servers`).
"""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["DOVECOT", "POSTFIX", "MailServers", "free_port", "make_certificates",
           "require_mail_servers"]

DOVECOT = shutil.which("dovecot") or ("/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists()
                                      else None)
POSTFIX = shutil.which("postfix") or ("/usr/sbin/postfix" if Path("/usr/sbin/postfix").exists()
                                      else None)
POSTFIX_MASTER = "/usr/lib/postfix/sbin/master"
#: Dovecot's LMTP server is its own Debian package (dovecot-lmtpd)
DOVECOT_LMTP = Path("/usr/lib/dovecot/lmtp")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_mail_servers(*, tls: bool = False) -> None:
    """Fail (CI) or skip (elsewhere) unless a private Dovecot + Postfix (with ``tls``, and
    openssl to make their certificates) can run here."""
    import pytest

    from tests.conftest import IN_CI

    missing = [name for name, there in (("dovecot (dovecot-imapd)", DOVECOT),
                                        ("dovecot-lmtpd", DOVECOT_LMTP.exists() or None),
                                        ("postfix", POSTFIX),
                                        ("openssl", shutil.which("openssl") if tls else True))
               if not there]
    problem = (f"not installed: {', '.join(missing)} (see tests/run.sh)" if missing
               else None if os.geteuid() == 0 else "a private Postfix needs root")
    if problem is None:
        return
    if IN_CI:
        pytest.fail(problem)
    pytest.skip(problem)


def _wait_for_port(port: int, proc: subprocess.Popen[bytes] | None, what: str,
                   log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
                tail = log.read_text("utf-8", "replace")[-3000:] if log.exists() else ""
                raise RuntimeError(f"{what} did not listen on {port}:\n{tail}") from None
            time.sleep(0.05)


class MailServers:
    """Dovecot (IMAP, LMTP, auth) and Postfix (MX port, submission port) for one domain."""

    def __init__(self, domain: str = "company.example", *, imap_process_limit: int = 400,
                 tls: bool = False) -> None:
        self.domain = domain
        self.root = Path(tempfile.mkdtemp(prefix="mailservers-"))
        self.root.chmod(0o711)  # Dovecot's and Postfix's own users walk through it
        self.imap_port, self.lmtp_port, self.auth_port = free_port(), free_port(), free_port()
        self.smtp_port, self.submission_port = free_port(), free_port()
        self.tls = tls
        #: implicit TLS ports (0 without ``tls``)
        self.imaps_port = free_port() if tls else 0
        self.submissions_port = free_port() if tls else 0
        #: the CA certificate a client trusts to talk to these servers (``tls`` only)
        self.ca_file = self.root / "tls" / "ca.pem" if tls else None
        self.users: dict[str, str] = {}
        self._imap_process_limit = imap_process_limit
        if os.geteuid() == 0:  # Dovecot will not serve mail as root
            nobody = pwd.getpwnam("nobody")
            self._mail_uid, self._mail_gid = nobody.pw_uid, nobody.pw_gid
        else:
            self._mail_uid, self._mail_gid = os.getuid(), os.getgid()
        self.dovecot: subprocess.Popen[bytes] | None = None
        self.postfix: subprocess.Popen[bytes] | None = None

    # -- users ---------------------------------------------------------------------------

    def add_user(self, address: str, password: str) -> None:
        """A virtual mailbox: Dovecot's passwd-file, Postfix's maps (both re-read on change)."""
        self.users[address.lower()] = password
        self._write_users()

    def _write_users(self) -> None:
        (self.root / "dovecot").mkdir(exist_ok=True)
        lines = [f"{a}:{{PLAIN}}{p}:{self._mail_uid}:{self._mail_gid}::{self.root}/mail/{a}::"
                 for a, p in sorted(self.users.items())]
        users = self.root / "dovecot" / "users"
        _write_atomic(users, "\n".join(lines) + "\n", 0o640)
        if os.geteuid() == 0:  # Dovecot's auth process reads it as its own user
            shutil.chown(users, group="dovecot")
        etc = self.root / "postfix" / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        _write_atomic(etc / "mailboxes", "".join(f"{a} OK\n" for a in sorted(self.users)), 0o644)
        # a login may send as its own address only (reject_sender_login_mismatch)
        _write_atomic(etc / "senders", "".join(f"{a} {a}\n" for a in sorted(self.users)), 0o644)

    # -- life cycle ----------------------------------------------------------------------

    def __enter__(self) -> MailServers:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def start(self) -> None:
        self._write_users()
        if self.tls and not (self.root / "tls" / "server.pem").exists():
            make_certificates(self.root / "tls", self.domain)
        self.start_dovecot()
        self.start_postfix()

    def stop(self) -> None:
        self.stop_postfix()
        self.stop_dovecot()

    def start_dovecot(self) -> None:
        assert DOVECOT is not None
        base = self.root / "dovecot"
        for sub in ("run", "state"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "mail").mkdir(exist_ok=True)
        os.chown(self.root / "mail", self._mail_uid, self._mail_gid)
        config = base / "dovecot.conf"
        config.write_text(self._dovecot_conf(), "utf-8")
        # -F: in the foreground, our child, stopped by its PID
        self.dovecot = subprocess.Popen([DOVECOT, "-F", "-c", str(config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        for port in (self.imap_port, self.lmtp_port, self.auth_port, self.imaps_port):
            if port:
                _wait_for_port(port, self.dovecot, "Dovecot", base / "dovecot.log")

    def stop_dovecot(self) -> None:
        # Dovecot's master leaves running imap processes behind on SIGTERM here; a
        # restart must drop every connection, so its whole process group is stopped
        # (the group it leads since we started it with a session of its own).
        _stop(self.dovecot, group=True)
        self.dovecot = None

    def restart_dovecot(self) -> None:
        """Stop Dovecot (every IMAP connection drops) and start it again on the same ports."""
        self.stop_dovecot()
        self.start_dovecot()

    def start_postfix(self) -> None:
        assert POSTFIX is not None
        base = self.root / "postfix"
        etc, queue, data = base / "etc", base / "queue", base / "data"
        for directory in (etc, queue, data):
            directory.mkdir(parents=True, exist_ok=True)
        shutil.chown(data, "postfix")
        (etc / "main.cf").write_text(self._postfix_main(), "utf-8")
        (etc / "master.cf").write_text(self._postfix_master(), "utf-8")
        _make_queue(queue)
        # master(8) itself, in the foreground (-d): our child, stopped by its PID. Not
        # "postfix start", whose checks also re-own files of the system's installation.
        self.postfix = subprocess.Popen([POSTFIX_MASTER, "-d", "-c", str(etc)],
                                        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"},
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        for port in (self.smtp_port, self.submission_port, self.submissions_port):
            if port:
                _wait_for_port(port, self.postfix, "Postfix", base / "postfix.log")

    def stop_postfix(self) -> None:
        _stop(self.postfix)  # master stops its own children
        self.postfix = None

    def set_uidvalidity(self, address: str, folder: str, value: int) -> None:
        """Give ``folder`` a new UIDVALIDITY, as a server does when it rebuilds a folder."""
        subprocess.run(["doveadm", "-c", str(self.root / "dovecot" / "dovecot.conf"), "mailbox",
                        "update", "-u", address, "--uid-validity", str(value), folder],
                       check=True, timeout=60, capture_output=True)

    # -- clients -------------------------------------------------------------------------

    def imap(self, address: str) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=30)
        client.login(address, self.users[address.lower()])
        return client

    def submit(self, sender: str, recipients: list[str], raw: bytes) -> None:
        """Send as ``sender`` through the submission port, with AUTH (and STARTTLS)."""
        with smtplib.SMTP("127.0.0.1", self.submission_port, timeout=30) as smtp:
            if self.tls:
                smtp.starttls(context=self.client_context())
            smtp.login(sender, self.users[sender.lower()])
            smtp.sendmail(sender, recipients, raw)

    def client_context(self) -> ssl.SSLContext:
        """A client's TLS context that trusts these servers (and verifies them)."""
        assert self.ca_file is not None, "started without tls=True"
        return ssl.create_default_context(cafile=str(self.ca_file))

    def imap_logins(self, address: str) -> list[str]:
        """Dovecot's log lines of the IMAP logins of ``address``; ``TLS`` in those that used
        it, ``secured`` in plaintext ones from loopback."""
        log = self.root / "dovecot" / "dovecot.log"
        text = log.read_text("utf-8", "replace") if log.exists() else ""
        return [line for line in text.splitlines()
                if "imap-login: Info: Login:" in line and f"user=<{address.lower()}>" in line]

    def messages(self, address: str, folder: str = "INBOX") -> list[bytes]:
        """Every message in ``folder`` of ``address``, in UID order (none if it is missing)."""
        client = self.imap(address)
        try:
            typ, _ = client.select(f'"{folder}"', readonly=True)
            if typ != "OK":
                return []
            typ, data = client.uid("FETCH", "1:*", "(BODY.PEEK[])")
            return [item[1] for item in data if isinstance(item, tuple)]
        finally:
            client.logout()

    # -- config files --------------------------------------------------------------------

    def _dovecot_conf(self) -> str:
        base = self.root / "dovecot"
        return f"""
protocols = imap lmtp
listen = 127.0.0.1
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
{self._dovecot_ssl()}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
first_valid_uid = 1
mail_location = maildir:~/Maildir
mail_max_userip_connections = 50
imap_idle_notify_interval = 1 mins
# IDLE learns of new mail within a second even where inotify is not available
mailbox_idle_check_interval = 1 secs
postmaster_address = postmaster@{self.domain}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%Lu {base}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%Lu {base}/users
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
  mailbox Drafts {{
    special_use = \\Drafts
    auto = subscribe
  }}
  mailbox Trash {{
    special_use = \\Trash
    auto = subscribe
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.imaps_port}
  }}
  process_limit = {self._imap_process_limit}
}}
service imap {{
  process_limit = {self._imap_process_limit}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp_port}
  }}
}}
service auth {{
  inet_listener {{
    address = 127.0.0.1
    port = {self.auth_port}
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0600
  }}
  unix_listener stats-writer {{
    mode = 0600
  }}
}}
"""

    def _dovecot_ssl(self) -> str:
        if not self.tls:
            return "ssl = no"
        tls = self.root / "tls"
        # ssl = yes: STARTTLS on the IMAP port, TLS from the start on the imaps listener
        return (f"ssl = yes\nssl_cert = <{tls}/server.pem\nssl_key = <{tls}/server.key\n"
                "ssl_min_protocol = TLSv1.2")

    def _postfix_main(self) -> str:
        base = self.root / "postfix"
        return self._postfix_tls_main() + f"""
compatibility_level = 3.6
queue_directory = {base}/queue
data_directory = {base}/data
mail_owner = postfix
setgid_group = postdrop
maillog_file_prefixes = {base}
maillog_file = {base}/postfix.log
myhostname = mail.{self.domain}
mydomain = {self.domain}
myorigin = {self.domain}
mydestination =
mynetworks = 127.0.0.0/8
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
alias_maps =
alias_database =
local_recipient_maps =
relayhost =
biff = no
append_dot_mydomain = no
smtputf8_enable = no
virtual_mailbox_domains = {self.domain}
virtual_mailbox_maps = texthash:{base}/etc/mailboxes
virtual_transport = lmtp:inet:127.0.0.1:{self.lmtp_port}
default_transport = error:this private test server delivers only to {self.domain}
smtpd_sender_login_maps = texthash:{base}/etc/senders
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
# a Dovecot that restarts is tried again soon, not after Postfix's usual minutes
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
lmtp_connect_timeout = 5s
"""

    def _postfix_tls_main(self) -> str:
        if not self.tls:
            return ""
        tls = self.root / "tls"
        return f"""
smtpd_tls_cert_file = {tls}/server.pem
smtpd_tls_key_file = {tls}/server.key
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes
"""

    def _postfix_master(self) -> str:
        sasl = (
            "smtpd_sasl_auth_enable=yes",
            "smtpd_sasl_type=dovecot",
            f"smtpd_sasl_path=inet:127.0.0.1:{self.auth_port}",
            "smtpd_client_restrictions=permit_sasl_authenticated,reject",
            "smtpd_sender_restrictions=reject_sender_login_mismatch",
            "smtpd_recipient_restrictions=permit_sasl_authenticated,reject",
        )
        if not self.tls:
            submission = _options(*sasl, "smtpd_tls_security_level=none")
            submissions = ""
        else:  # STARTTLS before anything (and before AUTH) on 587; TLS from the start on 465
            tls_only = ("smtpd_tls_security_level=encrypt", "smtpd_tls_auth_only=yes")
            submission = _options(*sasl, *tls_only)
            submissions = (f"127.0.0.1:{self.submissions_port} inet n - n - - smtpd\n"
                           + _options(*sasl, *tls_only, "smtpd_tls_wrappermode=yes"))
        return f"""
127.0.0.1:{self.smtp_port} inet n - n - - smtpd
127.0.0.1:{self.submission_port} inet n - n - - smtpd
{submission}
{submissions}
tlsmgr    unix  - - n 1000? 1 tlsmgr
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
proxywrite unix - - n -  1 proxymap
smtp      unix  - - n -  - smtp
relay     unix  - - n -  - smtp
showq     unix  n - n -  - showq
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
lmtp      unix  - - n -  - lmtp
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def _options(*options: str) -> str:
    """master.cf ``-o`` lines for one service."""
    return "\n".join(f"  -o {option}" for option in options)


def make_certificates(directory: Path, domain: str) -> None:
    """A CA (``openssl req -x509``) and a server certificate it signs, for 127.0.0.1,
    localhost and mail.<domain>: ``ca.pem``, ``server.pem``, ``server.key``.

    A CA apart from the server's certificate, as real deployments have, so a client
    that trusts ``ca.pem`` checks a chain and the names, not one pinned certificate.
    """
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, timeout=60,
                       capture_output=True)
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "3",
            "-subj", f"/CN=mailcoach test CA for {domain}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", *key, "-keyout", "server.key", "-out", "server.csr",
            "-subj", f"/CN=mail.{domain}")
    (directory / "server.ext").write_text(
        f"subjectAltName = IP:127.0.0.1, DNS:localhost, DNS:mail.{domain}\n"
        "extendedKeyUsage = serverAuth\nbasicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n", "utf-8")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "3", "-extfile", "server.ext")
    for name in ("ca.key", "server.key"):
        (directory / name).chmod(0o600)  # read by Dovecot's and Postfix's masters (root)


def _write_atomic(path: Path, text: str, mode: int) -> None:
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text, "utf-8")
    temporary.chmod(mode)
    os.replace(temporary, path)


#: Postfix's queue subdirectories: (name, owner, group, mode), as postfix-files has them
_QUEUE_DIRS = (
    *((name, "postfix", None, 0o700) for name in (
        "active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming",
        "private", "saved", "trace")),
    ("maildrop", "postfix", "postdrop", 0o730),
    ("public", "postfix", "postdrop", 0o710),
    ("pid", "root", None, 0o755),
)


def _make_queue(queue: Path) -> None:
    queue.chmod(0o755)
    for name, owner, group, mode in _QUEUE_DIRS:
        directory = queue / name
        directory.mkdir(exist_ok=True)
        shutil.chown(directory, owner, group)
        directory.chmod(mode)


def _stop(proc: subprocess.Popen[bytes] | None, *, group: bool = False) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    if group:
        try:  # what is left of the group it led (its pid is the group's id)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
