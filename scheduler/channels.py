"""The ways a reminder reaches people: the in-app inbox, a signed webhook, and e-mail, behind one small interface."""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from typing import Protocol

from careplan.db import Database
from careplan.models import utcnow

IDENTIFIER_SYSTEM = "https://careplan.example.org/fhir/sid/reminder-delivery"
CATEGORY_SYSTEM = "https://careplan.example.org/fhir/CodeSystem/communication-category"
USER_AGENT = "careplan-reminders/1"


class DeliveryFailed(Exception):
    """A channel could not deliver; the message is short and carries no patient data (it is stored as last_error)."""


class PermanentFailure(DeliveryFailed):
    """A channel can never deliver this message as addressed (no point retrying)."""


class Skipped(Exception):
    """Not attempted: the lease ran short, so the delivery goes back to the queue untouched."""


@dataclass(frozen=True)
class Outgoing:
    """A claimed delivery with what a channel needs to send it (address and secret read at claim time)."""

    id: int
    channel: str
    recipient: str
    idempotency_key: str
    payload: dict
    attempts: int = 0
    first_attempt_at: datetime | None = None
    address: str | None = None
    secret: str | None = None
    reminder_id: int | None = None
    kind: str | None = None
    source: str | None = None
    patient: str | None = None
    tier: str | None = None
    due_at: datetime | None = None
    extra: dict = field(default_factory=dict)


class Channel(Protocol):
    """Send one delivery; return on success and raise on failure (DeliveryFailed for expected ones)."""

    def send(self, delivery: Outgoing) -> None: ...


def message_of(delivery: Outgoing) -> dict:
    """Return the JSON document a webhook receives for delivery (references and ids only, no names)."""
    return {
        "idempotency_key": delivery.idempotency_key,
        "delivery_id": delivery.id,
        "recipient": delivery.recipient,
        "reminder": {
            "id": delivery.reminder_id,
            "kind": delivery.kind,
            "tier": delivery.tier,
            "source": delivery.source,
            "patient": delivery.patient,
            "due_at": delivery.due_at.isoformat() if delivery.due_at else None,
        },
        "message": delivery.payload,
    }


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """Return the X-Careplan-Signature value: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">."""
    digest = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Treat a redirect as a failure: following it would turn the POST into a GET and call that delivered."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirects)


class WebhookChannel:
    """POST the message as JSON to the recipient's URL, signed with the channel's secret; any 2xx is delivered."""

    def __init__(self, *, timeout: float = 10.0):
        self.timeout = timeout

    def send(self, delivery: Outgoing) -> None:
        if not delivery.address:
            raise PermanentFailure("webhook channel has no URL")
        body = json.dumps(message_of(delivery), separators=(",", ":"), sort_keys=True).encode("utf-8")
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Careplan-Timestamp": timestamp,
            "Idempotency-Key": delivery.idempotency_key,
        }
        if delivery.secret:
            headers["X-Careplan-Signature"] = signature(delivery.secret, timestamp, body)
        request = urllib.request.Request(delivery.address, data=body, headers=headers, method="POST")
        try:
            with _opener.open(request, timeout=self.timeout) as response:
                response.read(65536)
                status = response.status
        except urllib.error.HTTPError as exc:
            # urllib raises for every status >= 400 (and for redirects it cannot follow with a body).
            raise DeliveryFailed(f"webhook answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeliveryFailed(f"webhook unreachable: {type(reason).__name__}: {str(reason)[:200]}") from None
        if not 200 <= status < 300:
            raise DeliveryFailed(f"webhook answered HTTP {status}")


class EmailChannel:
    """Send the message by SMTP (standard library); the body holds the text and links, never a patient's name."""

    def __init__(self, *, host: str | None, port: int = 25, username: str | None = None, password: str | None = None,
                 starttls: bool = False, sender: str = "careplan@localhost", timeout: float = 30.0,
                 ca_file: str | None = None):
        self.host, self.port, self.username, self.password = host, port, username, password
        self.starttls, self.sender, self.timeout, self.ca_file = starttls, sender, timeout, ca_file

    def tls_context(self) -> ssl.SSLContext:
        """Return the STARTTLS context: certificate and host name verified, against ca_file or the system's CAs."""
        # smtplib's own default context verifies nothing; a reminder must not go to whoever sits on the path.
        return ssl.create_default_context(cafile=self.ca_file)

    def send(self, delivery: Outgoing) -> None:
        if not self.host:
            raise DeliveryFailed("e-mail is not configured (CAREPLAN_SMTP_HOST)")
        if not delivery.address or "@" not in delivery.address:
            raise PermanentFailure("e-mail channel has no valid address")
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = delivery.address
        message["Subject"] = str(delivery.payload.get("subject") or "careplan reminder")
        # A stable Message-ID lets mail systems drop a copy sent again after a lost lease.
        message["Message-ID"] = f"<{delivery.idempotency_key}@careplan>"
        message["X-Careplan-Idempotency-Key"] = delivery.idempotency_key
        message.set_content(_email_text(delivery))
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=self.tls_context())
                if self.username:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused:
            raise PermanentFailure("SMTP server refused the recipient address") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryFailed(f"SMTP failed: {type(exc).__name__}: {str(exc)[:200]}") from None


def _email_text(delivery: Outgoing) -> str:
    payload = delivery.payload
    lines = [str(payload.get("text") or payload.get("subject") or "You have a follow-up due.")]
    links = (payload.get("data") or {}).get("links") if isinstance(payload.get("data"), dict) else None
    if isinstance(links, dict):
        links = list(links.values())
    for link in links or []:
        lines.append(str(link.get("href") if isinstance(link, dict) else link))
    lines.append("")
    lines.append(f"Reference: {delivery.idempotency_key}")
    return "\n".join(lines) + "\n"


class InboxChannel:
    """Create a Communication in the recipient's inbox; its identifier is the idempotency key, so a retry is a no-op."""

    def __init__(self, db: Database):
        self.db = db

    def send(self, delivery: Outgoing) -> None:
        from careplan.store import service
        from careplan.validation.resource import validate_resource

        resource = communication_of(delivery)
        validate_resource(resource, expected_type="Communication")
        criteria = _criteria(delivery)
        service.write_retrying(self.db, lambda session: service.create_in(session, resource=resource,
                                                                           criteria=criteria),
                               lock_key=service.conditional_lock_key("Communication", criteria))

    def send_batch(self, deliveries: list[Outgoing], *, deadline: float | None = None) -> list[BaseException | None]:
        """Create the Communications of several deliveries in one transaction; return each one's error or None."""
        try:
            # The common case in few round trips: everything in one go, no savepoint per delivery.
            return self._batch(deliveries, deadline=deadline, isolate=False)
        except _Retry:
            return self._batch(deliveries, deadline=deadline, isolate=True)

    def _batch(self, deliveries: list[Outgoing], *, deadline: float | None, isolate: bool
               ) -> list[BaseException | None]:
        from careplan.store import service
        from careplan.validation.resource import validate_resource

        errors: list[BaseException | None] = []
        with self.db.writing() as session:
            # Another holder of the same delivery (after a lost lease) waits here, then finds this one's
            # Communication; the keys are locked in one sorted statement so two batches never deadlock.
            _lock_all(session, sorted(service.conditional_lock_key("Communication", _criteria(d))
                                      for d in deliveries))
            # If-None-Exist for the whole batch in one search (identifier=k1,k2,...) under those locks, instead of
            # one search per Communication: the same guarantee for a third of the cost.
            existing = _existing_keys(session, [d.idempotency_key for d in deliveries])
            for delivery in deliveries:
                if delivery.idempotency_key in existing:
                    errors.append(None)  # sent before (by this worker or one that lost its lease)
                    continue
                if deadline is not None and time.monotonic() > deadline:
                    errors.append(Skipped())
                    continue
                try:
                    resource = communication_of(delivery)
                    validate_resource(resource, expected_type="Communication")
                    if isolate:
                        with session.begin_nested():
                            service.create_in(session, resource=resource)
                    else:
                        service.create_in(session, resource=resource)
                except Exception as exc:  # noqa: BLE001 - this delivery fails, the others go on
                    if not isolate:
                        raise _Retry() from exc
                    errors.append(exc)
                else:
                    errors.append(None)
        return errors


class _Retry(Exception):
    """One delivery of an unisolated batch failed: run the batch again with a savepoint per delivery."""


def _existing_keys(session, keys: list[str]) -> set[str]:
    """Return the idempotency keys among keys that already have their inbox Communication."""
    from careplan.search import query as search_query

    if not keys:
        return set()
    value = ",".join(f"{IDENTIFIER_SYSTEM}|{key}" for key in keys)
    found = set()
    for row in search_query.matching_rows(session, "Communication", search_query.parse([("identifier", value)])):
        for identifier in (row.content or {}).get("identifier", []):
            if identifier.get("system") == IDENTIFIER_SYSTEM:
                found.add(identifier.get("value"))
    return found & set(keys)


def _lock_all(session, names: list[str]) -> None:
    if session.get_bind().dialect.name != "postgresql" or not names:
        return  # SQLite's single writer lock already serialises the batch
    from sqlalchemy import text

    from careplan.db import advisory_key

    session.execute(text("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(CAST(:keys AS bigint[])) AS k"),
                    {"keys": [advisory_key(name) for name in names]})


def _criteria(delivery: Outgoing) -> list[tuple[str, str]]:
    return [("identifier", f"{IDENTIFIER_SYSTEM}|{delivery.idempotency_key}")]


def communication_of(delivery: Outgoing) -> dict:
    """Return the inbox Communication for delivery (status completed, category reminder)."""
    payload = delivery.payload
    resource = {
        "resourceType": "Communication",
        "identifier": [{"system": IDENTIFIER_SYSTEM, "value": delivery.idempotency_key}],
        "status": "completed",
        "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": "reminder", "display": "Reminder"}]}],
        "recipient": [{"reference": delivery.recipient}],
        "payload": [{"contentString": str(payload.get("text") or payload.get("subject") or "Follow-up due")}],
    }
    if payload.get("subject"):
        resource["topic"] = {"text": str(payload["subject"])}
    if delivery.patient:
        resource["subject"] = {"reference": delivery.patient}
    about = (delivery.source or "").split("#", 1)[0]
    if about.count("/") == 1 and about[:1].isupper():
        resource["about"] = [{"reference": about}]
    resource["sent"] = utcnow().isoformat()
    return resource
