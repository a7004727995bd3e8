"""SQLModel tables: everything probono-bot keeps. Client data is ciphertext (``*_enc``)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from storage.types import UTCDateTime, utcnow


def _ts(**kw: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, **kw)


def _opt_ts(**kw: Any) -> Any:
    return Field(default=None, sa_type=UTCDateTime, **kw)


def _blob(nullable: bool = True) -> Any:
    return Field(default=None, sa_type=LargeBinary, nullable=nullable)


class Channel(StrEnum):
    SMS = "sms"
    TELEGRAM = "telegram"
    CONSOLE = "console"


class Role(StrEnum):
    ATTORNEY = "attorney"
    COORDINATOR = "coordinator"


class Direction(StrEnum):
    IN = "in"
    OUT = "out"


class MessageStatus(StrEnum):
    # inbound
    RECEIVED = "received"  # stored, not yet processed
    PROCESSED = "processed"
    # outbound (Twilio's own words where they exist)
    QUEUED = "queued"  # in our outbox
    SENDING = "sending"  # claimed by a dispatcher; outcome unknown if it crashes
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REVIEW = "review"  # outcome unknown after a crash: a person decides, no blind resend


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # opted out, erased, no address
    REVIEW = "review"


class Priority:
    """Lower runs first: a waiting client goes ahead of bulk work."""

    REPLY = 0
    STAFF = 1
    REMINDER = 5
    BROADCAST = 9


class ScheduleKind(StrEnum):
    REMINDER = "reminder"
    CHECKIN = "checkin"
    INTAKE_NUDGE = "intake_nudge"
    BROADCAST = "broadcast"


class ScheduleStatus(StrEnum):
    PENDING = "pending"
    CLAIMED = "claimed"
    DONE = "done"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


# --------------------------------------------------------------------------- people


class Client(SQLModel, table=True):
    """A person the program serves. Name and phone are ciphertext under the client's data key."""

    id: int | None = Field(default=None, primary_key=True)
    wrapped_key: bytes | None = _blob()  # None once erased: every field reads as erased
    name_enc: bytes | None = _blob()
    # Keyed hash of the normalised name: conflict checks find clients without decrypting.
    name_hash: str | None = Field(default=None, max_length=64, index=True)
    language: str = Field(default="en", max_length=16)
    timezone: str = Field(default="America/New_York", max_length=64)
    discreet: bool = Field(default=False)  # unsafe to text details: neutral wording only
    safe_time_enc: bytes | None = _blob()
    pin_hash: str | None = Field(default=None, max_length=128)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    erased_at: datetime | None = _opt_ts()


class ChannelIdentity(SQLModel, table=True):
    """How to reach a client on one channel; found by a keyed hash of the address."""

    __tablename__ = "channel_identity"
    __table_args__ = (UniqueConstraint("channel", "address_hash", name="uq_identity_address"),)

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = Field(foreign_key="client.id", index=True)
    channel: str = Field(max_length=16)
    address_hash: str = Field(max_length=64)
    address_enc: bytes | None = _blob()  # the phone number or chat id, under the client key
    verified: bool = Field(default=True)
    opted_out_at: datetime | None = _opt_ts()
    notice_sent_at: datetime | None = _opt_ts()  # the "Reply STOP to opt out" line went out
    last_inbound_at: datetime | None = _opt_ts()  # replies go back where the client last wrote
    created_at: datetime = _ts()


class ConsentEvent(SQLModel, table=True):
    """Each opt-in, opt-out and consent, with where it came from."""

    __tablename__ = "consent_event"

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = Field(foreign_key="client.id", index=True)
    channel: str = Field(max_length=16)
    kind: str = Field(max_length=16)  # opt_out | opt_in | consent | blocked
    source: str = Field(max_length=32)  # keyword | provider_error | intake | staff
    at: datetime = _ts()


class Staff(SQLModel, table=True):
    """An attorney or coordinator; found by a keyed hash of their Telegram id."""

    id: int | None = Field(default=None, primary_key=True)
    name_enc: bytes | None = _blob()  # under the master key
    role: str = Field(max_length=16)
    telegram_id_hash: str | None = Field(default=None, max_length=64, unique=True)
    telegram_id_enc: bytes | None = _blob()
    phone_hash: str | None = Field(default=None, max_length=64, index=True)
    phone_enc: bytes | None = _blob()
    active: bool = Field(default=True)
    created_at: datetime = _ts()


# --------------------------------------------------------------------------- cases


class Case(SQLModel, table=True):
    """A client's legal matter."""

    id: int | None = Field(default=None, primary_key=True)
    reference: str = Field(max_length=16, unique=True)
    client_id: int = Field(foreign_key="client.id", index=True)
    category: str = Field(max_length=32)
    status: str = Field(default="open", max_length=64)
    assigned_staff_id: int | None = Field(default=None, foreign_key="staff.id", index=True)
    urgent: bool = Field(default=False)
    discreet: bool = Field(default=False)
    conflict_flag: bool = Field(default=False)
    needs_review: bool = Field(default=False)
    eligibility: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    intake_enc: bytes | None = _blob()  # the intake answers, under the client key
    closed: bool = Field(default=False)
    opened_at: datetime = _ts()
    updated_at: datetime = _ts()
    last_news_at: datetime = _ts()


class CaseStatusChange(SQLModel, table=True):
    """One entry of a case's status history."""

    __tablename__ = "case_status_change"

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="case.id", index=True)
    status: str = Field(max_length=64)
    by_staff_id: int | None = Field(default=None, foreign_key="staff.id")
    source: str = Field(default="cli", max_length=16)
    at: datetime = _ts()


class AdverseParty(SQLModel, table=True):
    """The other side of a case, for conflict checks (name by keyed hash)."""

    __tablename__ = "adverse_party"

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="case.id", index=True)
    name_hash: str = Field(max_length=64, index=True)
    name_enc: bytes | None = _blob()
    created_at: datetime = _ts()


class Document(SQLModel, table=True):
    """A photo or file a client sent, encrypted, attached to their case."""

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = Field(foreign_key="client.id", index=True)
    case_id: int | None = Field(default=None, foreign_key="case.id", index=True)
    message_id: int | None = Field(default=None, foreign_key="message.id", index=True)
    content_type: str = Field(default="application/octet-stream", max_length=128)
    size: int = Field(default=0)
    content_enc: bytes | None = _blob()
    created_at: datetime = _ts()


class Appointment(SQLModel, table=True):
    """A hearing, meeting or call; ``starts_at`` is aware UTC, shown in ``timezone``."""

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="case.id", index=True)
    kind: str = Field(default="appointment", max_length=32)
    starts_at: datetime = Field(sa_type=UTCDateTime, index=True)
    timezone: str = Field(max_length=64)
    place_enc: bytes | None = _blob()
    bring_enc: bytes | None = _blob()
    status: str = Field(default="scheduled", max_length=16)  # scheduled | cancelled | done
    confirmed_at: datetime | None = _opt_ts()
    declined_at: datetime | None = _opt_ts()
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


# --------------------------------------------------------------------------- messages


class Message(SQLModel, table=True):
    """Every message in and out. ``provider_id`` is unique per channel (webhook dedupe)."""

    __table_args__ = (
        UniqueConstraint("channel", "provider_id", name="uq_message_provider"),
        Index("ix_message_direction_status", "direction", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    direction: str = Field(max_length=4)
    channel: str = Field(max_length=16)
    provider_id: str | None = Field(default=None, max_length=128)
    client_id: int | None = Field(default=None, foreign_key="client.id", index=True)
    staff_id: int | None = Field(default=None, foreign_key="staff.id", index=True)
    case_id: int | None = Field(default=None, foreign_key="case.id", index=True)
    body_enc: bytes | None = _blob()  # under the client key when client_id is set
    media: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON))
    status: str = Field(max_length=16)
    error_code: str | None = Field(default=None, max_length=32)
    attempts: int = Field(default=0)
    created_at: datetime = _ts()
    processed_at: datetime | None = _opt_ts()
    updated_at: datetime = _ts()


class OutboxItem(SQLModel, table=True):
    """One message waiting to go out. Written with the change that caused it; claimed once."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "priority", "due_at"),
        # The claim asks of each candidate "has this client a row in flight or ahead?".
        Index("ix_outbox_client_status", "client_id", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", unique=True)
    dedupe_key: str | None = Field(default=None, max_length=128, unique=True)
    channel: str = Field(max_length=16)
    client_id: int | None = Field(default=None, foreign_key="client.id")
    staff_id: int | None = Field(default=None, foreign_key="staff.id")
    kind: str = Field(default="reply", max_length=16)  # reply|reminder|broadcast|staff|system
    priority: int = Field(default=Priority.REPLY)
    urgent: bool = Field(default=False)  # urgent messages ignore quiet hours
    due_at: datetime = _ts()
    status: str = Field(default=OutboxStatus.PENDING, max_length=16)
    attempts: int = Field(default=0)
    lease_until: datetime | None = _opt_ts()
    claimed_by: str | None = Field(default=None, max_length=64)
    last_error: str | None = Field(default=None, max_length=200)
    broadcast_id: int | None = Field(default=None, foreign_key="broadcast.id", index=True)
    extra: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = _ts()
    sent_at: datetime | None = _opt_ts()


class ConversationState(SQLModel, table=True):
    """Where a client is in a dialogue; answers so far are ciphertext."""

    __tablename__ = "conversation_state"

    client_id: int = Field(foreign_key="client.id", primary_key=True)
    flow: str = Field(default="intake", max_length=32)
    state: str = Field(default="start", max_length=64)
    data_enc: bytes | None = _blob()
    history: list[str] | None = Field(default=None, sa_column=Column(JSON))
    version: int = Field(default=0)
    nudged_at: datetime | None = _opt_ts()
    updated_at: datetime = _ts()


class StaffDialogue(SQLModel, table=True):
    """Where a staff member is in a dialogue (the /broadcast wizard); one at a time.

    Kept here, not in process memory, so that whichever process takes the next message
    carries on. ``data`` is plain JSON, not ciphertext: it holds what a coordinator typed
    for a broadcast (a segment expression and the texts every client of the segment will
    get), never a client's words or case data, and the same texts are stored as plain JSON
    in ``broadcast.texts`` once sent. A dialogue untouched for a day is forgotten.
    """

    __tablename__ = "staff_dialogue"

    staff_id: int = Field(foreign_key="staff.id", primary_key=True)
    flow: str = Field(max_length=32)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    version: int = Field(default=1)
    updated_at: datetime = _ts(index=True)


# --------------------------------------------------------------------------- timed work


class ScheduledItem(SQLModel, table=True):
    """A reminder, check-in or scheduled send; ``unique_key`` makes it happen once."""

    __tablename__ = "scheduled_item"
    __table_args__ = (
        Index("ix_scheduled_due", "status", "due_at"),
        # The claim also takes claimed rows whose lease ran out (their claimer died).
        Index("ix_scheduled_lease", "status", "lease_until"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)
    unique_key: str = Field(max_length=128, unique=True)
    due_at: datetime = Field(sa_type=UTCDateTime)
    status: str = Field(default=ScheduleStatus.PENDING, max_length=16)
    client_id: int | None = Field(default=None, foreign_key="client.id", index=True)
    case_id: int | None = Field(default=None, foreign_key="case.id", index=True)
    appointment_id: int | None = Field(default=None, foreign_key="appointment.id", index=True)
    broadcast_id: int | None = Field(default=None, foreign_key="broadcast.id")
    payload: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    lease_until: datetime | None = _opt_ts()
    created_at: datetime = _ts()
    done_at: datetime | None = _opt_ts()


class Broadcast(SQLModel, table=True):
    """A coordinator's message to a segment, one text per language."""

    id: int | None = Field(default=None, primary_key=True)
    segment: str = Field(max_length=256)
    texts: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON))
    fallback_language: str | None = Field(default=None, max_length=16)
    discreet_safe: bool = Field(default=False)
    created_by_staff_id: int | None = Field(default=None, foreign_key="staff.id")
    status: str = Field(default="draft", max_length=16)  # draft|scheduled|sending|done|cancelled
    scheduled_at: datetime | None = _opt_ts()
    recipients: int = Field(default=0)
    created_at: datetime = _ts()
    finished_at: datetime | None = _opt_ts()


class AuditLog(SQLModel, table=True):
    """Who did what to which case, and when. Never the content itself."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _ts(index=True)
    actor_kind: str = Field(max_length=16)  # staff | client | system | cli | stranger
    actor_id: int | None = Field(default=None)
    action: str = Field(max_length=64)
    case_id: int | None = Field(default=None, index=True)
    client_id: int | None = Field(default=None, index=True)
    allowed: bool = Field(default=True)
    detail: str | None = Field(default=None, max_length=256)


class KeyState(SQLModel, table=True):
    """Bookkeeping for key rotation: which master key wrapped the data last."""

    __tablename__ = "key_state"

    id: int | None = Field(default=None, primary_key=True)
    current_kid: str = Field(max_length=32)
    rotated_at: datetime = _ts()


# --------------------------------------------------------------------------- shared by processes


class Lease(SQLModel, table=True):
    """Work only one process may do at a time (the Telegram poller): who holds it, until when.

    The holder renews it well before ``expires_at``; a holder that dies stops renewing, and
    another process takes it once it has expired.
    """

    name: str = Field(max_length=64, primary_key=True)
    holder: str = Field(max_length=64)
    expires_at: datetime = Field(sa_type=UTCDateTime)


class SendRate(SQLModel, table=True):
    """A provider's send rate shared by every process: the next free send slot of a sender.

    ``next_at`` is seconds since the epoch, not a datetime, so that claiming slots is one
    portable UPDATE (``max(next_at, now) + k / rate``) on PostgreSQL and SQLite alike.
    """

    __tablename__ = "send_rate"

    channel: str = Field(max_length=16, primary_key=True)
    sender: str = Field(max_length=64, primary_key=True)
    next_at: float = Field(default=0.0)
