"""``mailcoach-sendmail``: the sendmail command line, submitting to a mailcoach server.

Programs that send mail with ``sendmail -t -i < message`` work unchanged:
link this command as ``sendmail``. It reads one message from standard input,
or a whole queue mbox (input whose first line starts with ``From ``), and
submits each message in order over SMTP to the configured server, logging in
with the user's login file from the data directory. When the server is not
running, the messages go to the spool in the data directory (written
durably) and the server delivers them when it starts; the command says so.

Recipients are the arguments, plus with ``-t`` the To, Cc and Bcc headers
(Postfix's rule: both, not sendmail 8's "arguments are removed"). A queue
mbox always takes each message's own headers, as ``-t``. A bare name
(``swe1``) is completed with the local domain. Bcc headers are removed
before the message is sent. A message without From gets one (``-F`` name,
``-f`` address or the configured user); one without any To, Cc or Bcc gets
``To:`` its recipients, since mail to an agent or robot is acted on only
when it is addressed To it. Without ``-i``, a line with a single dot ends
the input, as in every sendmail.

Every message is checked before any is sent; a queue stops at the first
message the server refuses and says how many were submitted. A refused
recipient refuses its whole message (RSET): nothing is half-delivered.

Exit codes are sendmail's (``sysexits.h``), each with one line on stderr:

    0   submitted, or spooled (which is said)
    64  usage: unknown option, bad address on the command line, no recipients
    65  data error: bad address in a header, malformed or oversized message,
        a sender the server refuses (553 5.1.3, 552, 554 and other 5xx to
        MAIL FROM or DATA)
    67  addressee unknown: a recipient was refused (550 5.1.1 no such
        mailbox, 550 5.7.1 not in the local domain)
    69  unavailable: the server refused the session
    75  temporary failure: a 4xx answer, a broken connection, or the spool
        could not be written; try again
    77  permission denied: the server refused the login (535, 530)
    78  configuration error: the config file is wrong

Not supported: ``-bs`` (SMTP on standard input), ``-bp``/``-q`` (there is no
queue to list or run), aliases, ``Resent-*`` headers with ``-t``.
"""

from __future__ import annotations

import getopt
import os
import re
import smtplib
import sys
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import formataddr
from pathlib import Path
from typing import Final

from .addresses import normalize_address, parse_address_list
from .config import Config
from .credentials import LOGIN_FILE
from .postmaster import split_header_block
from .store import mbox

__all__ = ["main"]

EX_OK: Final = 0
EX_USAGE: Final = 64
EX_DATAERR: Final = 65
EX_NOUSER: Final = 67
EX_UNAVAILABLE: Final = 69
EX_TEMPFAIL: Final = 75
EX_NOPERM: Final = 77
EX_CONFIG: Final = 78

PROG: Final = "mailcoach-sendmail"
TIMEOUT: Final = 30.0

# getopt letters as Postfix's sendmail takes them; ":" = takes a value.
# Accepted and ignored: -A -B -G -L -N -O -R -U -V -X -e -h -m -n -p (and -o
# other than -oi): delivery modes, DSN, logging, body type.
_SHORT: Final = "A:B:F:GL:N:O:R:UV:X:b:e:f:h:imno:p:r:tv"
_LONG: Final = ["config=", "data-dir=", "help", "version"]

USAGE: Final = f"""\
usage: {PROG} [-t] [-i] [-f sender] [-F name] [-v] [options] [recipient ...] < message

Submit mail to a running mailcoach server; spooled when it is not running.
  -t            also take recipients from To, Cc and Bcc (Bcc is removed)
  -i, -oi       a line with a single dot does not end the input
  -f ADDR       envelope sender (also -r); From when the message has none
  -F NAME       full name for a From header that is added
  -v            say what the server answered
  --config FILE the server's config (default $MAILCOACH_CONFIG or the defaults)
  --data-dir D  the server's data directory (default $MAILCOACH_DATA_DIR or the config's)
Accepted and ignored: -bm -oem -odi -odb -oXXX -N dsn -R ret -B type -V id -U -m -n.
Input whose first line starts with "From " is a queue mbox: every message is sent.
Exit codes follow sysexits.h (64 usage, 65 data, 67 unknown user, 75 try again, ...)."""

_HEADER_LINE = re.compile(rb"^[!-9;-~]+:")
_DOT_LINE = re.compile(rb"^\.\r?$", re.MULTILINE)
_STATUS = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\b")
_HEADERS = BytesHeaderParser(policy=compat32)


class _Fail(Exception):
    """Stop with ``code`` and one line on stderr."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(slots=True)
class _Options:
    extract: bool = False
    ignore_dots: bool = False
    sender: str | None = None
    full_name: str | None = None
    verbose: bool = False
    config: str | None = None
    data_dir: str | None = None
    recipients: list[str] = field(default_factory=list)
    show: str | None = None  # "help" or "version"


@dataclass(frozen=True, slots=True)
class _Outgoing:
    raw: bytes  # LF line ends, Bcc removed, From (and To) added when missing
    sender: str
    rcpts: list[str]


# -- command line -----------------------------------------------------------------


def _parse_args(argv: list[str]) -> _Options:
    try:
        pairs, operands = getopt.gnu_getopt(argv, _SHORT, _LONG)
    except getopt.GetoptError as exc:
        raise _Fail(EX_USAGE, f"{exc} (see --help)") from None
    opts = _Options(recipients=operands)
    for flag, value in pairs:
        if flag == "-t":
            opts.extract = True
        elif flag == "-i" or (flag == "-o" and value == "i"):
            opts.ignore_dots = True
        elif flag in ("-f", "-r"):
            opts.sender = value
        elif flag == "-F":
            opts.full_name = value
        elif flag == "-v":
            opts.verbose = True
        elif flag == "-b" and value != "m":
            raise _Fail(EX_USAGE, f"-b{value} is not supported: only -bm (deliver mail)")
        elif flag == "--config":
            opts.config = value
        elif flag == "--data-dir":
            opts.data_dir = value
        elif flag in ("--help", "--version"):
            opts.show = flag[2:]
    return opts


def _qualified(raw: str, domain: str) -> str | None:
    raw = raw.strip()
    if raw and "@" not in raw and "<" not in raw:
        raw = f"{raw}@{domain}"  # sendmail completes a bare user name
    return normalize_address(raw)


def _argument_recipients(arguments: list[str], domain: str) -> list[str]:
    """Recipients from the command line: addresses, ``Name <addr>``, comma lists."""
    found: list[str] = []
    for piece in (p.strip() for arg in arguments for p in arg.split(",")):
        if not piece:
            continue
        addr = piece
        if piece.endswith(">") and "<" in piece:
            addr = piece[piece.rindex("<") + 1 : -1]
        address = _qualified(addr, domain)
        if address is None:
            raise _Fail(EX_USAGE, f"bad recipient address: {piece}")
        if address not in found:
            found.append(address)
    return found


# -- input --------------------------------------------------------------------------


def _split_input(data: bytes, ignore_dots: bool) -> tuple[list[bytes], bool]:
    """The messages in ``data`` and whether it was a queue mbox."""
    data = data.replace(b"\r\n", b"\n")
    if not ignore_dots and (dot := _DOT_LINE.search(data)) is not None:
        data = data[: dot.start()]
    if not data.startswith(b"From "):
        return ([data] if data.strip() else []), False
    return mbox.parse(data), True  # the reader of the store, -m and queue files


def _prepare(raw: bytes, opts: _Options, config: Config, queue: bool) -> _Outgoing:
    if not _HEADER_LINE.match(raw):
        raw = b"\n" + raw  # no header at all: everything is body, as sendmail reads it
    fields, body = split_header_block(raw)
    fields = [line for line in fields if line.strip()]
    headers = _HEADERS.parsebytes(raw)
    names = {line.split(b":", 1)[0].strip().lower() for line in fields if b":" in line}
    sender = config.user
    if opts.sender is not None:
        qualified = _qualified(opts.sender, config.domain) if opts.sender.strip("<> ") else ""
        if qualified is None:
            raise _Fail(EX_USAGE, f"bad sender address: {opts.sender}")
        sender = qualified
    elif b"from" in names:
        senders, _ = parse_address_list(headers.get_all("From", []))
        sender = senders[0] if len(senders) == 1 else config.user
    rcpts = _argument_recipients(opts.recipients, config.domain)
    if opts.extract or queue:
        values = [v for name in ("To", "Cc", "Bcc") for v in headers.get_all(name, [])]
        found, bad = parse_address_list(values)
        if bad:
            raise _Fail(EX_DATAERR, f"bad address in the To, Cc or Bcc header: {bad[0]}")
        rcpts += [a for a in found if a not in rcpts]
    if not rcpts:
        where = "in To, Cc or Bcc" if opts.extract or queue else "given (use -t or name them)"
        raise _Fail(EX_USAGE, f"no recipients {where}")

    kept = [line for line in fields if not line.lower().startswith(b"bcc:")]
    if b"from" not in names:
        author = formataddr((opts.full_name or "", sender or config.user), "utf-8")
        kept.insert(0, f"From: {author}\n".encode())
    if not names & {b"to", b"cc", b"bcc"}:
        kept.append(f"To: {', '.join(rcpts)}\n".encode())
    return _Outgoing(b"".join(kept) + b"\n" + body, sender, rcpts)


# -- SMTP -----------------------------------------------------------------------------


def _exit_for(stage: str, reply: str) -> int:
    """The sysexits code for the SMTP refusal ``reply`` at ``stage`` (MAIL, RCPT, DATA)."""
    code = int(reply[:3])
    match = _STATUS.match(reply[4:])
    status = match.group(1) if match else ""
    if 400 <= code < 500:
        return EX_TEMPFAIL
    if code in (530, 534, 535, 538) or status in ("5.7.0", "5.7.8", "5.7.9", "5.7.11"):
        return EX_NOPERM
    if stage == "RCPT":
        return EX_DATAERR if status == "5.1.3" else EX_NOUSER
    if status in ("5.1.1", "5.1.2", "5.1.6"):
        return EX_NOUSER
    return EX_DATAERR if stage in ("MAIL", "DATA") else EX_UNAVAILABLE


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(text.split())}"


def _server_address(config: Config) -> tuple[str, int]:
    host = config.smtp.host
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return host, config.smtp.port


def _connect(config: Config) -> smtplib.SMTP:
    """An SMTP session to the server, greeted. OSError: nobody answers there."""
    host, port = _server_address(config)
    client = smtplib.SMTP(timeout=TIMEOUT)
    try:
        code, text = client.connect(host, port)
    except smtplib.SMTPException as exc:
        client.close()
        raise _Fail(EX_TEMPFAIL, f"{host}:{port}: the server hung up: {exc}") from None
    except OSError:
        client.close()
        raise
    if code != 220:
        client.close()
        raise _Fail(EX_UNAVAILABLE, f"{host}:{port} refused the session: {_reply(code, text)}")
    return client


def _login(client: smtplib.SMTP, config: Config, data_dir: Path) -> None:
    client.ehlo_or_helo_if_needed()
    if not client.has_extn("auth"):
        return  # AUTH off (or only over TLS, which MAIL FROM will say)
    login = data_dir / LOGIN_FILE
    try:
        password = login.read_text("utf-8").strip()
    except OSError as exc:
        raise _Fail(EX_NOPERM, f"cannot read the login file {login}: {exc.strerror} "
                    "(is this the server's data directory? see --data-dir)") from None
    try:
        client.login(config.user, password)
    except smtplib.SMTPAuthenticationError as exc:
        raise _Fail(EX_NOPERM, f"login as {config.user} refused: "
                    f"{_reply(exc.smtp_code, exc.smtp_error)} (password from {login})") from None


def _send(client: smtplib.SMTP, out: _Outgoing) -> str:
    """Submit one message; the server's final reply, or _Fail after RSET."""
    options = []
    if any(not a.isascii() for a in [out.sender, *out.rcpts]) and client.has_extn("smtputf8"):
        options.append("SMTPUTF8")
    if not out.raw.isascii() and client.has_extn("8bitmime"):
        options.append("BODY=8BITMIME")
    reply = _reply(*client.mail(out.sender, options))
    if not reply.startswith("250"):
        client.rset()
        raise _Fail(_exit_for("MAIL", reply), f"sender <{out.sender}> refused: {reply}")
    for rcpt in out.rcpts:
        reply = _reply(*client.rcpt(rcpt))
        if not reply.startswith(("250", "251")):
            client.rset()
            raise _Fail(_exit_for("RCPT", reply), f"recipient {rcpt} refused: {reply}")
    try:
        reply = _reply(*client.data(out.raw.replace(b"\n", b"\r\n")))
    except smtplib.SMTPDataError as exc:
        reply = _reply(exc.smtp_code, exc.smtp_error)
    if not reply.startswith("250"):
        raise _Fail(_exit_for("DATA", reply), f"message refused: {reply}")
    return reply


# -- spool ----------------------------------------------------------------------------


def _check_for_spool(out: _Outgoing, config: Config) -> None:
    """What the server would refuse for sure, said now rather than at its next start."""
    from .errors import SubmitError
    from .postmaster import prepare

    for rcpt in out.rcpts:
        if not config.is_local(rcpt):
            raise _Fail(EX_NOUSER, f"recipient {rcpt} refused: relay denied, "
                        f"{rcpt} is not in {config.domain}")
    try:
        prepare(out.raw, domain=config.domain, max_size=config.smtp.max_message_size,
                max_hops=config.limits.max_hops, origin="sendmail", envelope_rcpts=out.rcpts)
    except SubmitError as exc:
        raise _Fail(_exit_for("DATA", exc.smtp_reply()),
                    f"message refused: {exc.smtp_reply()}") from None


def _spool(outgoing: list[_Outgoing], config: Config, data_dir: Path, why: str) -> int:
    from .spool import SPOOL_DIR, write_spool

    for out in outgoing:
        _check_for_spool(out, config)
    try:
        paths = [write_spool(data_dir, out.raw, out.sender, out.rcpts) for out in outgoing]
    except OSError as exc:
        raise _Fail(EX_TEMPFAIL, f"server not running ({why}) and the spool in "
                    f"{data_dir / SPOOL_DIR} cannot be written: {exc.strerror or exc}") from None
    if len(paths) == 1:
        what = f"message spooled in {paths[0].resolve()}, it will"
    else:
        what = f"{len(paths)} messages spooled in {paths[0].parent.resolve()}, they will"
    print(f"{PROG}: server not running ({why}); {what} be delivered when the server starts",
          file=sys.stderr)
    return EX_OK


# -- main -----------------------------------------------------------------------------


def _load(opts: _Options) -> tuple[Config, Path]:
    from .config import load_config
    from .errors import ConfigError

    try:
        config = load_config(opts.config or os.environ.get("MAILCOACH_CONFIG") or None)
    except ConfigError as exc:
        raise _Fail(EX_CONFIG, str(exc)) from None
    data_dir = opts.data_dir or os.environ.get("MAILCOACH_DATA_DIR") or config.data_dir
    return config, Path(data_dir).expanduser()


def _run(argv: list[str]) -> int:
    opts = _parse_args(argv)
    if opts.show is not None:
        return _show(opts.show)
    config, data_dir = _load(opts)
    messages, queue = _split_input(sys.stdin.buffer.read(), opts.ignore_dots)
    if not messages:
        raise _Fail(EX_DATAERR, "no message on standard input")
    outgoing = _prepare_all(messages, opts, config, queue)
    client = _connect_or_spool(outgoing, config, data_dir)
    if isinstance(client, int):
        return client
    _submit_all(client, outgoing, opts, config, data_dir, queue)
    return EX_OK


def _show(what: str) -> int:
    """Print the usage ("help") or the version ("version")."""
    if what == "help":
        print(USAGE)
    else:
        from . import __version__

        print(f"{PROG} (mailcoach) {__version__}")
    return EX_OK


def _prepare_all(
    messages: list[bytes], opts: _Options, config: Config, queue: bool
) -> list[_Outgoing]:
    """Every message checked before any is sent: one bad message refuses the whole queue."""
    outgoing: list[_Outgoing] = []
    for number, raw in enumerate(messages, start=1):
        try:
            outgoing.append(_prepare(raw, opts, config, queue))
        except _Fail as fail:
            if queue:
                fail.reason = f"message {number} of {len(messages)}: {fail.reason}; none submitted"
            raise
    return outgoing


def _connect_or_spool(
    outgoing: list[_Outgoing], config: Config, data_dir: Path
) -> smtplib.SMTP | int:
    """A session to the server, or, when nobody answers, the exit code of spooling ``outgoing``."""
    try:
        return _connect(config)
    except OSError as exc:
        from .spool import spool_lock

        host, port = _server_address(config)
        why = f"{host}:{port}: {(exc.strerror or str(exc)).lower()}"
        try:
            with spool_lock(data_dir):
                try:  # once more, under the lock: a server starting now lists the spool after
                    return _connect(config)
                except OSError:
                    return _spool(outgoing, config, data_dir, why)
        except OSError as lock_exc:
            raise _Fail(EX_TEMPFAIL, f"server not running ({why}) and the spool in {data_dir} "
                        f"cannot be used: {lock_exc.strerror or lock_exc}") from None


def _submit_all(
    client: smtplib.SMTP, outgoing: list[_Outgoing], opts: _Options,
    config: Config, data_dir: Path, queue: bool,
) -> None:
    """Log in and send each message in turn; the session is closed in any case."""
    host, port = _server_address(config)
    submitted = 0
    try:
        _login(client, config, data_dir)
        for number, out in enumerate(outgoing, start=1):
            try:
                reply = _send(client, out)
            except _Fail as fail:
                if queue:
                    done = f"{submitted} submitted" if submitted else "none submitted"
                    fail.reason = f"message {number} of {len(outgoing)}: {fail.reason}; {done}"
                raise
            submitted += 1
            if opts.verbose:
                print(f"{PROG}: message {number} to {', '.join(out.rcpts)}: {reply}",
                      file=sys.stderr)
    except (smtplib.SMTPException, OSError) as exc:
        done = f"; {submitted} of {len(outgoing)} submitted" if queue else ""
        raise _Fail(EX_TEMPFAIL, f"{host}:{port}: connection lost: {exc}{done}") from None
    finally:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()


def main(argv: list[str] | None = None) -> int:
    """Run the command; the return value is the exit code (``sysexits.h``)."""
    try:
        return _run(sys.argv[1:] if argv is None else argv)
    except _Fail as fail:
        print(f"{PROG}: {fail.reason}", file=sys.stderr)
        return fail.code


if __name__ == "__main__":
    sys.exit(main())
