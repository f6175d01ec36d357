"""A Unified Messaging server's voice mail submission: an Exchange 2010 UM server
records a caller's message and submits it to a hub of its site over plain SMTP
(no XSHADOW) — one of scenario F's entry points, protected by delayed
acknowledgement. ``exchange-emu um-submit`` does the same."""

from __future__ import annotations

import email.message
import email.utils
import smtplib
from dataclasses import dataclass
from pathlib import Path

from exchange_emu.directory import Organization, Server


class UMSubmitError(Exception):
    """The voice mail could not be submitted; str() says why, in one line."""


@dataclass(frozen=True)
class VoiceMail:
    caller: str
    recipient: str
    audio: bytes
    duration: int = 0


def compose_voice_mail(voice_mail: VoiceMail, *, now: float, um_fqdn: str) -> bytes:
    """The voice mail message as a UM server writes it: a note and the audio attached."""
    message = email.message.EmailMessage()
    message["From"] = voice_mail.caller
    message["To"] = voice_mail.recipient
    message["Subject"] = f"Voice Mail from {voice_mail.caller} ({voice_mail.duration} seconds)"
    message["Date"] = email.utils.formatdate(now)
    message["Message-ID"] = email.utils.make_msgid(domain=um_fqdn)
    message["X-MS-Exchange-Organization-SCL"] = "-1"
    message["Content-Class"] = "voice"
    message.set_content(f"You received a voice mail from {voice_mail.caller}.\n")
    message.add_attachment(voice_mail.audio, maintype="audio", subtype="wav",
                           filename="VoiceMessage.wav")
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def hub_for(organization: Organization, name: str | None) -> Server:
    """The hub to submit to: ``name``, or the first hub of the organization file."""
    if name is not None:
        server = organization.server(name)
        if "hub" not in server.roles or server.smtp is None:
            raise UMSubmitError(f"{server.name} is not a hub transport server with SMTP")
        return server
    hubs = [s for s in organization.servers_with_role("hub") if s.smtp is not None]
    if not hubs:
        raise UMSubmitError("the organization has no hub transport server with SMTP")
    return hubs[0]


def submit_voice_mail(organization: Organization, hub: Server, voice_mail: VoiceMail, *,
                      now: float, um_fqdn: str = "um01.contoso.test",
                      timeout: float = 120.0) -> str:
    """Submit over plain SMTP, as a UM server does; the Message-ID once the hub said 250
    (which delayed acknowledgement may hold back)."""
    assert hub.smtp is not None
    data = compose_voice_mail(voice_mail, now=now, um_fqdn=um_fqdn)
    message_id = email.message_from_bytes(data)["Message-ID"]
    try:
        with smtplib.SMTP(hub.smtp.host, hub.smtp.port, local_hostname=um_fqdn,
                          timeout=timeout) as client:
            envelope_sender = email.utils.parseaddr(voice_mail.caller)[1]
            client.sendmail(envelope_sender, [voice_mail.recipient], data)
    except (OSError, smtplib.SMTPException) as e:
        raise UMSubmitError(f"{hub.name} at {hub.smtp}: {e}") from None
    return str(message_id)


def read_audio(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise UMSubmitError(f"cannot read {path}: {e.strerror}") from None
