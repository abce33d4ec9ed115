"""A report as an e-mail over SMTP (the stdlib's smtplib): the plain-text
body, the title as subject, and a Message-ID made from the report id so a
receiver (and a mail archive) threads and dedupes a report sent twice."""
from __future__ import annotations

import smtplib
import ssl
from email import policy
from email.message import EmailMessage
from email.utils import formatdate

from farm.notify.settings import Smtp


class DeliveryError(Exception):
    """The receiver did not accept the report; the outbox tries again later."""


def message_id(report_id: str) -> str:
    return f"<{report_id}@farm.reports>"


# Lines up to SMTP's own limit: a kernel log or JIT line stays one line, and
# an ASCII body goes as plain 7bit text (no quoted-printable), as mailing
# lists and lore expect; the subject is not folded.
MAIL_POLICY = policy.SMTP.clone(max_line_length=998)


def message(cfg: Smtp, row) -> EmailMessage:
    msg = EmailMessage(policy=MAIL_POLICY)
    msg["Subject"] = row.title
    msg["From"] = cfg.sender
    msg["To"] = ", ".join(cfg.to)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id(row.report_id)
    msg["X-Farm-Report-Id"] = row.report_id
    msg.set_content(row.body)
    return msg


def send(cfg: Smtp, row) -> str | None:
    """Deliver or raise DeliveryError; returns a note when some (not all)
    recipients were refused (the report counts as sent: a resend would
    reach the others twice)."""
    try:
        with smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_s) as smtp:
            smtp.ehlo()
            if cfg.starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if cfg.user:
                smtp.login(cfg.user, cfg.password())
            refused = smtp.send_message(message(cfg, row))
    except (smtplib.SMTPException, OSError) as e:
        raise DeliveryError(f"smtp {cfg.host}:{cfg.port}: {type(e).__name__}: {e}") from None
    if refused:
        return "refused by the server for " + ", ".join(sorted(refused))
    return None
