"""Every table round-trips: what is written reads back the same, datetimes as aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import SQLModel

from bot.services import Services
from storage.models import (
    AdverseParty,
    Appointment,
    AuditLog,
    Broadcast,
    Case,
    CaseStatusChange,
    ChannelIdentity,
    Client,
    ConsentEvent,
    ConversationState,
    Document,
    KeyState,
    Lease,
    Message,
    OutboxItem,
    ScheduledItem,
    SendRate,
    Staff,
    StaffDialogue,
)

# Written in New York time on purpose: the store must hand back the same instant, in UTC.
NY = ZoneInfo("America/New_York")
WHEN = datetime(2026, 3, 8, 1, 30, 15, 123456, tzinfo=NY)  # hours before the DST jump


def _rows() -> list[SQLModel]:
    """One row of every table, every column set to something other than its default."""
    t = WHEN
    later = t + timedelta(days=1, minutes=7)
    return [
        Client(
            id=1, wrapped_key=b"\x01wrapped", name_enc=b"\x02name", name_hash="e" * 64,
            language="es", timezone="America/Chicago", discreet=True, safe_time_enc=b"\x02safe",
            pin_hash="pbkdf2$x", created_at=t, updated_at=later, erased_at=later,
        ),
        ChannelIdentity(
            id=1, client_id=1, channel="sms", address_hash="a" * 64, address_enc=b"\x02addr",
            verified=False, opted_out_at=t, notice_sent_at=t, last_inbound_at=later, created_at=t,
        ),
        ConsentEvent(id=1, client_id=1, channel="sms", kind="opt_out", source="keyword", at=t),
        Staff(
            id=1, name_enc=b"\x01n", role="attorney", telegram_id_hash="b" * 64,
            telegram_id_enc=b"\x01t", phone_hash="c" * 64, phone_enc=b"\x01p", active=False,
            created_at=t,
        ),
        Case(
            id=1, reference="ACD-EFG", client_id=1, category="housing", status="hearing set",
            assigned_staff_id=1, urgent=True, discreet=True, conflict_flag=True,
            needs_review=True, eligibility={"household": 3, "income": 1200.5, "ok": True},
            intake_enc=b"\x02intake", closed=True, opened_at=t, updated_at=later,
            last_news_at=later,
        ),
        CaseStatusChange(id=1, case_id=1, status="open", by_staff_id=1, source="staff", at=t),
        AdverseParty(id=1, case_id=1, name_hash="d" * 64, name_enc=b"\x02adv", created_at=t),
        Appointment(
            id=1, case_id=1, kind="hearing", starts_at=later, timezone="America/New_York",
            place_enc=b"\x02place", bring_enc=b"\x02bring", status="done", confirmed_at=t,
            declined_at=later, created_at=t, updated_at=later,
        ),
        Broadcast(
            id=1, segment="language=es", texts={"en": "Hi", "es": "Hola ñ"},
            fallback_language="en", discreet_safe=True, created_by_staff_id=1, status="done",
            scheduled_at=t, recipients=42, created_at=t, finished_at=later,
        ),
        Message(
            id=1, direction="out", channel="sms", provider_id="SM123", client_id=1, staff_id=1,
            case_id=1, body_enc=b"\x02body", media=[{"url": "https://x/1", "type": "image/png"}],
            status="delivered", error_code="30003", attempts=2, created_at=t, processed_at=t,
            updated_at=later,
        ),
        Document(
            id=1, client_id=1, case_id=1, message_id=1, content_type="image/jpeg", size=5,
            content_enc=b"\x02jpeg", created_at=t,
        ),
        OutboxItem(
            id=1, message_id=1, dedupe_key="reminder:1:7d", channel="sms", client_id=1,
            staff_id=1, kind="reminder", priority=5, urgent=True, due_at=t, status="sent",
            attempts=1, lease_until=later, claimed_by="host:1", last_error="429",
            broadcast_id=1, extra={"identity_id": 1}, created_at=t, sent_at=later,
        ),
        ConversationState(
            client_id=1, flow="intake", state="income", data_enc=b"\x02data",
            history=["start", "zip"], version=3, nudged_at=t, updated_at=later,
        ),
        StaffDialogue(
            staff_id=1, flow="broadcast", data={"step": "texts", "texts": {"es": "Hola ñ"}},
            version=4, updated_at=later,
        ),
        ScheduledItem(
            id=1, kind="reminder", unique_key="reminder:1:1d", due_at=t, status="claimed",
            client_id=1, case_id=1, appointment_id=1, broadcast_id=1, payload={"offset": 86400},
            lease_until=later, created_at=t, done_at=later,
        ),
        AuditLog(
            id=1, at=t, actor_kind="staff", actor_id=1, action="case.read", case_id=1,
            client_id=1, allowed=False, detail="not assigned",
        ),
        KeyState(id=1, current_kid="0123456789abcdef", rotated_at=t),
        Lease(name="telegram-poller", holder="host:1:abcdef12", expires_at=t),
        SendRate(channel="sms", sender="+15550001111", next_at=1_772_463_600.125),
    ]  # fmt: skip


async def test_every_table_round_trips(services: Services) -> None:
    rows = _rows()
    tables = {type(r).__table__.name for r in rows}  # type: ignore[attr-defined]
    assert tables == set(SQLModel.metadata.tables), "a table has no round-trip row"
    written = [r.model_dump() for r in rows]
    async with services.sessions() as session, session.begin():
        for row in rows:
            session.add(row)
            await session.flush()  # in dependency order, as listed

    async with services.sessions() as session:
        for row, expected in zip(rows, written, strict=True):
            model = type(row)
            pk: Any = tuple(expected[c.name] for c in model.__table__.primary_key.columns)
            loaded = await session.get(model, pk)
            assert loaded is not None, model.__name__
            got = loaded.model_dump()
            assert got == expected, model.__name__  # aware datetimes compare as instants
            for name, value in got.items():
                if isinstance(value, datetime):
                    assert value.tzinfo is UTC, f"{model.__name__}.{name} is {value.tzinfo}"
                    assert value == expected[name]


async def test_defaults_are_aware_utc_now(services: Services) -> None:
    before = datetime.now(UTC)
    async with services.sessions() as session, session.begin():
        client = Client()
        session.add(client)
    async with services.sessions() as session:
        loaded = await session.get(Client, client.id)
    assert loaded is not None and loaded.created_at.tzinfo is UTC
    assert before - timedelta(seconds=5) <= loaded.created_at <= datetime.now(UTC)
