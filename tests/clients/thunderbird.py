"""A Thunderbird profile written by hand: the account in ``user.js``, the password by NSS.

Thunderbird 153 opens its Account Hub when a profile has no account; a
``user.js`` holding one (incoming server, outgoing server, identity, account,
and the Local Folders every profile has) skips it. The password goes where
Thunderbird's login manager keeps it (``logins.json`` + ``key4.db``, see
``nss_logins``). Everything that would reach out to the internet (updates,
telemetry, the start page, add-on and provider look-ups, safe browsing) and
every first-run page or question is switched off, since the test machine has
no internet and nobody to click.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.clients.desktop import Display, GuiProcess
from tests.clients.nss_logins import write_logins
from tests.conftest import require_tool

__all__ = ["Thunderbird", "write_profile"]

USER = "user@localdomain"
_QUIET = {
    # no first-run pages, questions or donation appeals
    "mailnews.start_page.enabled": False,
    "mailnews.start_page.url": "about:blank",
    "mail.shell.checkDefaultClient": False,
    "mail.rights.version": 1,
    "app.donation.eoy.version.viewed": 999,
    "mail.provider.enabled": False,
    "mail.cloud_files.enabled": False,
    "mail.spotlight.firstRunDone": True,
    "mail.winsearch.firstRunDone": True,
    "mailnews.auto_config.addons_url": "",
    "mail.inappnotifications.enabled": False,
    "calendar.timezone.useSystemTimezone": True,
    # nothing goes out to the internet
    "app.update.enabled": False,
    "app.update.auto": False,
    "app.update.disabledForTesting": True,
    "extensions.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
    "mailnews.message_display.disable_remote_image": True,
    # send at once, no "are you sure" and no progress dialog to click away
    "mail.warn_on_send_accel_key": False,
    "mailnews.sendInBackground": False,
    "mailnews.show_send_progress": False,
    "mail.biff.show_alert": False,
    "mail.biff.play_sound": False,
    "mail.biff.use_system_alert": False,
    "mail.spellcheck.inline": False,
    "browser.tabs.remote.autostart": False,
}


def _user_js(prefs: dict[str, object]) -> str:
    return "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in prefs.items())


def write_profile(profile: Path, *, imap_port: int, smtp_port: int, password: str) -> None:
    profile.mkdir(parents=True)
    imap_uri = "imap://user%40localdomain@127.0.0.1"
    prefs: dict[str, object] = {
        "mail.accountmanager.accounts": "account1,account2",
        "mail.accountmanager.defaultaccount": "account1",
        "mail.accountmanager.localfoldersserver": "server2",
        "mail.account.account1.server": "server1",
        "mail.account.account1.identities": "id1",
        "mail.account.account2.server": "server2",
        "mail.server.server1.type": "imap",
        "mail.server.server1.name": "mailcoach",
        "mail.server.server1.hostname": "127.0.0.1",
        "mail.server.server1.port": imap_port,
        "mail.server.server1.userName": USER,
        "mail.server.server1.socketType": 0,  # no TLS: loopback
        "mail.server.server1.authMethod": 3,  # normal password
        "mail.server.server1.directory-rel": "[ProfD]ImapMail/127.0.0.1",
        "mail.server.server1.login_at_startup": True,
        "mail.server.server1.check_new_mail": True,
        "mail.server.server1.use_idle": True,
        "mail.server.server1.offline_download": True,
        "mail.server.server2.type": "none",
        "mail.server.server2.name": "Local Folders",
        "mail.server.server2.hostname": "Local Folders",
        "mail.server.server2.userName": "nobody",
        "mail.server.server2.directory-rel": "[ProfD]Mail/Local Folders",
        "mail.identity.id1.fullName": "User",
        "mail.identity.id1.useremail": USER,
        "mail.identity.id1.valid": True,
        "mail.identity.id1.smtpServer": "smtp1",
        "mail.identity.id1.fcc": True,
        "mail.identity.id1.fcc_folder": f"{imap_uri}/Sent",
        "mail.identity.id1.draft_folder": f"{imap_uri}/Drafts",
        "mail.identity.id1.compose_html": False,
        "mail.smtpservers": "smtp1",
        "mail.smtp.defaultserver": "smtp1",
        "mail.smtpserver.smtp1.type": "smtp",
        "mail.smtpserver.smtp1.hostname": "127.0.0.1",
        "mail.smtpserver.smtp1.port": smtp_port,
        "mail.smtpserver.smtp1.username": USER,
        "mail.smtpserver.smtp1.authMethod": 3,
        "mail.smtpserver.smtp1.try_ssl": 0,
        **_QUIET,
    }
    (profile / "user.js").write_text(_user_js(prefs))
    write_logins(profile, [("imap://127.0.0.1", USER, password),
                           ("smtp://127.0.0.1", USER, password)])


class Thunderbird:
    """Thunderbird on ``display`` with ``profile``; ``-compose`` given at start, if any."""

    def __init__(self, display: Display, profile: Path) -> None:
        self.display = display
        self.profile = profile
        self.program = require_tool("thunderbird")
        self.process: GuiProcess | None = None

    def start(self, *args: str) -> Thunderbird:
        # (MOZ_HEADLESS must stay unset: any value, even 0, means headless)
        env = {"HOME": str(self.profile.parent), "MOZ_CRASHREPORTER_DISABLE": "1",
               "MOZ_DISABLE_AUTO_SAFE_MODE": "1"}
        self.process = self.display.launch(
            [self.program, "-profile", str(self.profile), "-no-remote", *args],
            self.profile.parent / "thunderbird.log", **env)
        return self

    def imap_dir(self) -> Path:
        return self.profile / "ImapMail" / "127.0.0.1"

    def log(self) -> str:
        return self.process.output() if self.process is not None else ""

    def quit(self) -> None:
        if self.process is not None:
            self.process.stop(grace=15)
