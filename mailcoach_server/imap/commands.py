"""IMAP commands over the store: ``dispatch`` and the commands that are not about messages.

Every command is ``async def do_x(session, command) -> Tagged``: it writes
its untagged responses to ``session`` and returns the tagged completion,
or raises one of the domain errors of :mod:`.responses` (which
:func:`dispatch` turns into ``NO``/``BAD``). Before the tagged response,
:func:`dispatch` reports what changed in the selected mailbox meanwhile
(EXISTS, FLAGS, and EXPUNGE where RFC 3501 §7.4.1 allows it).

The commands on messages (FETCH, STORE, SEARCH, COPY/MOVE, EXPUNGE,
CLOSE, APPEND) are in :mod:`.message_commands`. Sockets are in :mod:`.server`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .. import __version__
from ..errors import StoreError
from .command import (
    AuthenticateCommand,
    Command,
    EnableCommand,
    IdCommand,
    ListCommand,
    LoginCommand,
    MailboxCommand,
    RenameCommand,
    RestoreCommand,
    StatusCommand,
)
from .connection import IdleDone, SaslResponse, State
from .folders import Folder
from .listing import list_folders
from .message_commands import (  # noqa: F401 - bound by name in COMMAND_TABLE
    do_append,
    do_close,
    do_copy,
    do_expunge,
    do_fetch,
    do_search,
    do_store,
)
from .parser import COMMAND_TABLE
from .registry import CommandTable
from .responses import (
    AuthenticationFailed,
    Cannot,
    Capability,
    Continuation,
    Enabled,
    Exists,
    Id,
    ImapError,
    Namespace,
    Recent,
    ResponseCode,
    Status,
    Tagged,
    Untagged,
)
from .selected import SelectedMailbox
from .session import Session

__all__ = ["COMMANDS", "dispatch", "greeting"]

log = logging.getLogger("mailcoach.imap")

Handler = Callable[[Session, Any], Awaitable[Tagged]]

#: FETCH, STORE and SEARCH (not their UID forms) must not report expunges (RFC 3501 §7.4.1).
_NO_EXPUNGE = frozenset({"FETCH", "STORE", "SEARCH"})


def greeting(session: Session) -> bytes:
    return bytes(Untagged.ok("mailcoach IMAP4rev1 ready",
                             ResponseCode.capability(session.capabilities())))


async def dispatch(session: Session, event: Command | SaslResponse | IdleDone) -> None:
    """Run one command (or finish IDLE / SASL) and write every response it makes."""
    if isinstance(event, IdleDone):
        await session.stop_idle()
        session.poll()
        session.send(session.conn.send(event.to_response()))
        return
    if isinstance(event, SaslResponse):
        tag, name = event.tag, "AUTHENTICATE"
        run: Callable[[], Awaitable[Tagged]] = lambda: _sasl_done(session, event)  # noqa: E731
    else:
        tag, name = event.tag, event.name
        handler = COMMANDS[name]
        run = lambda: handler(session, event)  # noqa: E731
    try:
        tagged: Tagged | None = await run()
    except ImapError as error:
        tagged = error.to_response(tag)
    except StoreError as error:
        log.warning("%s: %s failed: %s", session.id, name, error)
        tagged = Tagged.no(tag, f"{name} failed: {error}", ResponseCode("SERVERBUG"))
    except (ConnectionError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("%s: %s failed", session.id, name)
        tagged = Tagged.no(tag, f"{name} failed: internal server error",
                           ResponseCode("SERVERBUG"))
    if tagged is None:  # IDLE: the tagged response comes with DONE
        return
    uid = getattr(event, "uid", False)
    if session.conn.state is not State.LOGOUT:  # after BYE only the tagged OK (RFC 3501 §7.1.5)
        session.poll(expunge=uid or name not in _NO_EXPUNGE)
    session.send(session.conn.send(tagged))


# -- any state ------------------------------------------------------------------------------


async def do_capability(session: Session, command: Command) -> Tagged:
    session.send(bytes(Capability(session.capabilities())))
    return Tagged.ok(command.tag, "CAPABILITY completed")


async def do_noop(session: Session, command: Command) -> Tagged:
    return Tagged.ok(command.tag, f"{command.name} completed")


async def do_logout(session: Session, command: Command) -> Tagged:
    await session.stop_idle()
    session.send(bytes(Untagged.bye("mailcoach IMAP logging out")))
    session.conn.logout()
    return Tagged.ok(command.tag, "LOGOUT completed")


async def do_id(session: Session, command: IdCommand) -> Tagged:
    session.client_id = dict(command.parameters or ())
    if session.client_id:
        log.info("%s: client %s", session.id, session.client_id)
    session.send(bytes(Id({"name": "mailcoach", "version": __version__})))
    return Tagged.ok(command.tag, "ID completed")


# -- not authenticated ----------------------------------------------------------------------


async def do_starttls(session: Session, command: Command) -> Tagged:
    """RFC 3501 §6.2.1; the adapter starts TLS once this OK is written."""
    if session.backend.tls is None:
        return Tagged.no(command.tag, "STARTTLS is not configured on this server")
    if session.tls_active:
        return Tagged.bad(command.tag, "TLS is already on")
    session.starttls_pending = True
    return Tagged.ok(command.tag, "begin TLS negotiation now")


async def _login(session: Session, tag: str, user: str, password: str) -> Tagged:
    backend = session.backend
    if session.conn.login_disabled:
        return Tagged.no(tag, "plaintext login needs TLS on this listener",
                         ResponseCode("PRIVACYREQUIRED"))
    client = session.peer.rpartition(":")[0]  # "address:port", IPv6 too
    if not backend.credentials.check(user, password):
        log.warning("%s: failed login as %r from %s", session.id, user[:80], session.peer)
        # Slows down guessing per client address, across connections and SMTP.
        await backend.login_throttle.failed(client)
        raise AuthenticationFailed("wrong user name or password")
    await backend.login_throttle.succeeded(client)
    session.conn.authenticated(backend.credentials.user)
    log.info("%s: %s logged in from %s", session.id, backend.credentials.user, session.peer)
    return Tagged.ok(tag, "logged in", ResponseCode.capability(session.capabilities()))


async def do_login(session: Session, command: LoginCommand) -> Tagged:
    return await _login(session, command.tag, command.user, command.password)


async def do_authenticate(session: Session, command: AuthenticateCommand) -> Tagged:
    """Reached only when the connection did not start SASL itself."""
    if session.conn.login_disabled:
        return Tagged.no(command.tag, "plaintext authentication needs TLS on this listener",
                         ResponseCode("PRIVACYREQUIRED"))
    return Tagged.no(command.tag, f"unsupported mechanism {command.mechanism[:30]}",
                     ResponseCode("CANNOT"))


async def _sasl_done(session: Session, response: SaslResponse) -> Tagged:
    if response.authzid and response.authzid.lower() != response.username.lower() and \
            not session.backend.credentials.check(response.authzid, response.password):
        raise AuthenticationFailed("cannot act as another user")
    return await _login(session, response.tag, response.username, response.password)


# -- authenticated: mailboxes --------------------------------------------------------------


async def do_select(session: Session, command: MailboxCommand) -> Tagged:
    """SELECT / EXAMINE, with what mbsync and the others rely on (UIDVALIDITY, UIDNEXT)."""
    session.unselect()  # a failed SELECT leaves nothing selected (RFC 3501 §6.3.1)
    catalogue = session.backend.catalogue
    folder = await catalogue.folder(command.mailbox)
    read_only = command.name == "EXAMINE" or folder.read_only
    hub = session.backend.hub
    # UIDs only (4 bytes each, read in a thread): flags and places are read per command.
    # Under the folder's lock, so no expunge falls between the snapshot and the watching.
    async with session.backend.lock(folder.name):
        version = hub.version(folder.name)
        mailbox = await SelectedMailbox.open(catalogue, folder, read_only=read_only)
        session.select(mailbox)
    if hub.version(folder.name) != version:
        mailbox.on_rescan()  # a memory rewritten while the snapshot was read: look again
    uidnext = max(folder.uidnext, mailbox.last_uid + 1)
    out = [bytes(mailbox.flags_response()), bytes(Exists(mailbox.exists)),
           bytes(Recent(len(mailbox.recent)))]
    unseen = mailbox.first_unseen()
    if unseen is not None:
        out.append(bytes(Untagged.ok(f"message {unseen} is first unseen",
                                     ResponseCode.unseen(unseen))))
    out += [
        bytes(mailbox.permanent_flags()),
        bytes(Untagged.ok("UIDs valid", ResponseCode.uidvalidity(folder.uidvalidity))),
        bytes(Untagged.ok("predicted next UID", ResponseCode.uidnext(uidnext))),
    ]
    session.send_all(out)
    code = ResponseCode("READ-ONLY" if read_only else "READ-WRITE")
    return Tagged.ok(command.tag, f"{command.name} completed", code)


async def do_create(session: Session, command: MailboxCommand) -> Tagged:
    if command.undecodable:
        raise Cannot("the mailbox name is not valid modified UTF-7 (RFC 3501 §5.1.3)")
    await session.backend.catalogue.create(command.mailbox)
    return Tagged.ok(command.tag, "CREATE completed")


async def do_delete(session: Session, command: MailboxCommand) -> Tagged:
    await session.backend.catalogue.delete(command.mailbox)
    session.backend.hub.gone([command.mailbox])
    return Tagged.ok(command.tag, "DELETE completed")


async def do_xrestore(session: Session, command: RestoreCommand) -> Tagged:
    """An agent's memory back to a version (``mailcoach memory restore`` beside a server)."""
    folder = await session.backend.catalogue.folder(command.mailbox)
    version = await session.backend.catalogue.restore(folder, command.version)
    return Tagged.ok(command.tag, f"XRESTORE completed: this restore is version {version}")


async def do_rename(session: Session, command: RenameCommand) -> Tagged:
    if command.undecodable:
        raise Cannot("the new name is not valid modified UTF-7 (RFC 3501 §5.1.3)")
    gone = await session.backend.catalogue.rename(command.mailbox, command.new_name)
    session.backend.hub.gone(gone)
    return Tagged.ok(command.tag, "RENAME completed")


async def do_subscribe(session: Session, command: MailboxCommand) -> Tagged:
    await session.backend.catalogue.subscribe(command.mailbox, command.name == "SUBSCRIBE")
    return Tagged.ok(command.tag, f"{command.name} completed")


async def do_list(session: Session, command: ListCommand) -> Tagged:
    items = list_folders(
        session.backend.store, command.reference, command.patterns,
        lsub=command.name == "LSUB", selection=command.selection,
        return_options=command.return_options)
    session.send_all(bytes(item) for item in items)
    return Tagged.ok(command.tag, f"{command.name} completed")


async def do_status(session: Session, command: StatusCommand) -> Tagged:
    catalogue = session.backend.catalogue
    folder: Folder = await catalogue.folder(command.mailbox)
    messages, unseen = catalogue.counts(folder)
    uidnext = folder.uidnext
    if folder.party is None:
        uidnext = max(uidnext, session.backend.store.folders.max_uid(folder.name) + 1)
    values = {"MESSAGES": messages, "RECENT": catalogue.unclaimed_recent(folder),
              "UIDNEXT": uidnext,
              "UIDVALIDITY": folder.uidvalidity, "UNSEEN": unseen}
    session.send(bytes(Status(folder.name, tuple((i, values[i]) for i in command.items))))
    return Tagged.ok(command.tag, "STATUS completed")


async def do_namespace(session: Session, command: Command) -> Tagged:
    session.send(bytes(Namespace()))
    return Tagged.ok(command.tag, "NAMESPACE completed")


async def do_enable(session: Session, command: EnableCommand) -> Tagged:
    # RFC 5161: extensions we do not have are ignored; nothing here needs enabling.
    session.send(bytes(Enabled(())))
    return Tagged.ok(command.tag, "ENABLE completed")


async def do_idle(session: Session, command: Command) -> Tagged | None:
    session.send(bytes(Continuation("idling")))
    session.poll()
    session.start_idle()
    return None


async def do_unselect(session: Session, command: Command) -> Tagged:
    session.unselect()
    return Tagged.ok(command.tag, "UNSELECT completed")


def _bind(table: CommandTable) -> dict[str, Handler]:
    """Each declared command's ``do_*`` coroutine, found by its name in this module
    (the message commands are imported into it); a missing one fails at import."""
    scope = globals()
    missing = sorted(spec.handler for spec in table if spec.handler not in scope)
    if missing:
        raise ImportError(f"IMAP command handlers not defined: {', '.join(missing)}")
    return {spec.name: scope[spec.handler] for spec in table}


#: Each command's coroutine by name, from :data:`.parser.COMMAND_TABLE`.
COMMANDS: dict[str, Handler] = _bind(COMMAND_TABLE)
