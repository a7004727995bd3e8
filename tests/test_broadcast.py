"""Broadcasts: segments, one message per client in their language, skips, cancel and resume."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import col, func, select

from bot.casework import broadcast
from bot.channels.twilio import TwilioSender
from bot.clock import FakeClock
from bot.config import Settings
from bot.conversations import broadcast_wizard as wizard
from bot.core import Reply
from bot.dispatch import Dispatcher
from bot.outgoing import queue_reply
from bot.scheduler import Scheduler
from bot.services import Services
from storage import repo
from storage.db import transaction
from storage.models import (
    Appointment,
    Broadcast,
    Channel,
    Client,
    Message,
    MessageStatus,
    OutboxItem,
    OutboxStatus,
    Priority,
    Role,
    ScheduledItem,
    ScheduleStatus,
)
from tests.conftest import make_settings
from tests.fakes.fake_twilio import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    FakeTwilio,
    running_fake_twilio,
)

LANGS = ["en", "es", "zh", "vi", "ar", "ht"]
TEXTS = {
    "en": "The office is closed Monday. Your case is not affected.",
    "es": "La oficina está cerrada el lunes. Su caso no cambia.",
    "zh": "办公室周一关闭。您的案件不受影响。",
    "vi": "Văn phòng đóng cửa thứ Hai. Hồ sơ của bạn không bị ảnh hưởng.",
    "ar": "المكتب مغلق يوم الاثنين. قضيتك لم تتأثر.",
    "ht": "Biwo a fèmen lendi. Ka ou pa chanje.",
}


def phone(i: int) -> str:
    return f"+1202555{i:04d}"


NOTICE = "\n\n"  # the dispatcher adds the opt-out notice to a first message after this


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilio]:
    async with running_fake_twilio() as fake:
        yield fake


def twilio_settings(database_url: str, data_dir: Path, fake: FakeTwilio, **kw: object) -> Settings:
    values: dict[str, object] = {
        "SMS_SEND_RATE": 100000,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_FROM_NUMBER": FROM_NUMBER,
        "TWILIO_API_BASE_URL": fake.base_url,
    }
    values.update(kw)
    return make_settings(database_url, data_dir, **values)


async def with_twilio(settings: Settings, clock: FakeClock) -> Services:
    services = Services.build(settings, clock=clock)
    sender = TwilioSender.from_settings(settings, timeout=2.0)
    assert sender is not None
    services.senders[Channel.SMS] = sender
    return services


@pytest.fixture
async def svc(
    database_url: str, tmp_path: Path, clock: FakeClock, twilio: FakeTwilio
) -> AsyncIterator[Services]:
    """Services on a fake clock whose SMS goes to the fake Twilio at a high send rate."""
    services = await with_twilio(twilio_settings(database_url, tmp_path / "d", twilio), clock)
    yield services
    await services.close()


def sent_bodies(fake: FakeTwilio) -> dict[str, str]:
    """Phone number -> the text sent there, without the first-contact opt-out notice."""
    out: dict[str, str] = {}
    for m in fake.messages:
        assert m.to not in out, f"two messages to one client: {m.to}"
        out[m.to] = m.body.split(NOTICE)[0]
    return out


async def add_client(
    services: Services,
    i: int,
    *,
    language: str = "en",
    timezone: str = "America/New_York",
    channel: str = Channel.SMS,
    discreet: bool = False,
) -> Client:
    async with transaction(services.sessions) as session:
        client = await repo.create_client(
            session,
            vault=services.vault,
            channel=channel,
            address=phone(i) if channel == Channel.SMS else str(7000 + i),
            language=language,
            timezone=timezone,
        )
        if discreet:
            client.discreet = True
            session.add(client)
    return client


async def add_case(
    services: Services,
    client: Client,
    category: str = "housing",
    status: str = "open",
    *,
    closed: bool = False,
    staff_id: int | None = None,
) -> int:
    async with transaction(services.sessions) as session:
        case = await repo.create_case(session, client=client, category=category, status=status)
        case.closed = closed
        case.assigned_staff_id = staff_id
        session.add(case)
    assert case.id is not None
    return case.id


async def opt_out(services: Services, client: Client) -> None:
    async with transaction(services.sessions) as session:
        assert client.id is not None
        ident = await repo.reply_identity(session, client_id=client.id)
        assert ident is not None
        await repo.record_consent(session, identity=ident, kind="opt_out", source="keyword")


async def rows_of(services: Services, broadcast_id: int) -> list[tuple[OutboxItem, str]]:
    """Each outbox row of the broadcast with its decrypted body ('' for a skipped row)."""
    async with services.sessions() as session:
        found = await session.exec(
            select(OutboxItem, Message, Client)
            .join(Message, col(Message.id) == col(OutboxItem.message_id))
            .join(Client, col(Client.id) == col(OutboxItem.client_id))
            .where(OutboxItem.broadcast_id == broadcast_id)
            .order_by(col(OutboxItem.id))
        )
        return [
            (item, repo.message_body(services.vault, client, msg))
            for item, msg, client in found.all()
        ]


async def make_plan(
    services: Services, segment: str, texts: dict[str, str], **kw: object
) -> broadcast.Plan:
    async with services.sessions() as session:
        return await broadcast.plan(session, services, segment, texts, **kw)  # type: ignore[arg-type]


async def send_plan(services: Services, p: broadcast.Plan, **kw: object) -> Broadcast:
    async with transaction(services.sessions) as session:
        return await broadcast.enqueue(session, services, p, **kw)  # type: ignore[arg-type]


async def report(services: Services, broadcast_id: int) -> broadcast.Report:
    async with transaction(services.sessions) as session:
        return await broadcast.report(session, services, broadcast_id)


def client_ids(p: broadcast.Plan) -> set[int]:
    return {r.client_id for r in p.recipients}


# --------------------------------------------------------------------------- segment parsing


def test_segment_all_and_every_key() -> None:
    assert broadcast.parse_segment("all").everyone
    assert broadcast.parse_segment(" ALL ").expression() == "all"
    seg = broadcast.parse_segment(
        "language=ES, category=Housing,status=Hearing scheduled,attorney=4242,"
        "appointment-date=2026-03-10"
    )
    assert seg.language == "es"
    assert seg.category == "housing"
    assert seg.status == "Hearing scheduled"
    assert seg.attorney == 4242
    assert seg.appointment_date == date(2026, 3, 10)
    assert not seg.everyone
    assert seg.expression() == (
        "language=es,category=housing,status=Hearing scheduled,attorney=4242,"
        "appointment-date=2026-03-10"
    )
    # The canonical form parses back to the same segment.
    assert broadcast.parse_segment(seg.expression()) == seg


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("", "empty"),
        ("colour=red", "unknown segment key 'colour'"),
        ("language", "not key=value"),
        ("language=", "has no value"),
        ("language=fr", "not an offered language"),
        ("language=es,language=vi", "given twice"),
        ("all,language=es", "'all' cannot be combined"),
        ("language=es,,category=housing", "empty term"),
        ("category=Housing Court!", "not a category word"),
        ("attorney=bob", "numeric Telegram id"),
        ("attorney=-5", "numeric Telegram id"),
        ("appointment-date=10/03/2026", "expected YYYY-MM-DD"),
        ("appointment-date=2026-02-30", "not a real date"),
        ("status=" + "x" * 65, "longer than 64"),
    ],
)
def test_segment_errors_are_clear(expr: str, fragment: str) -> None:
    with pytest.raises(broadcast.SegmentError) as err:
        broadcast.parse_segment(expr)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- selection


async def test_each_segment_key_selects_the_right_clients(svc: Services) -> None:
    es = await add_client(svc, 1, language="es")
    en = await add_client(svc, 2, language="en")
    tokyo = await add_client(svc, 3, language="en", timezone="Asia/Tokyo")
    closed = await add_client(svc, 4, language="en")
    async with transaction(svc.sessions) as session:
        attorney = await repo.create_staff(
            session, vault=svc.vault, name="A. Lawyer", role=Role.ATTORNEY, telegram_id=4242
        )
    es_case = await add_case(svc, es, "housing", "Hearing scheduled", staff_id=attorney.id)
    await add_case(svc, en, "family", "open")
    tokyo_case = await add_case(svc, tokyo, "housing", "open")
    await add_case(svc, closed, "housing", "hearing scheduled", closed=True)
    # 2026-03-10 03:00 UTC is the evening of March 9 in New York and noon March 10 in Tokyo.
    async with transaction(svc.sessions) as session:
        for case_id in (es_case, tokyo_case):
            session.add(
                Appointment(
                    case_id=case_id,
                    starts_at=datetime(2026, 3, 10, 3, 0, tzinfo=UTC),
                    timezone="America/New_York",
                )
            )

    async def who(segment: str) -> set[int]:
        return client_ids(await make_plan(svc, segment, TEXTS))

    assert await who("all") == {es.id, en.id, tokyo.id, closed.id}
    assert await who("language=es") == {es.id}
    assert await who("language=en") == {en.id, tokyo.id, closed.id}
    # Case terms look at open cases only.
    assert await who("category=housing") == {es.id, tokyo.id}
    assert await who("status=HEARING SCHEDULED") == {es.id}
    assert await who("attorney=4242") == {es.id}
    assert await who("appointment-date=2026-03-09") == {es.id}
    assert await who("appointment-date=2026-03-10") == {tokyo.id}
    assert await who("category=housing,language=en") == {tokyo.id}
    # Terms must hold on the same case: the es client's housing case is not "family".
    assert await who("category=family,attorney=4242") == set()
    with pytest.raises(broadcast.SegmentError, match="no active staff"):
        await make_plan(svc, "attorney=999", TEXTS)


async def test_a_thousand_clients_six_languages_one_row_each(svc: Services) -> None:
    clients: list[Client] = []
    async with transaction(svc.sessions) as session:
        for i in range(1000):
            clients.append(
                await repo.create_client(
                    session,
                    vault=svc.vault,
                    channel=Channel.SMS,
                    address=phone(i),
                    language=LANGS[i % 6],
                )
            )
    # Every 50th client has two housing cases: matched twice, messaged once.
    async with transaction(svc.sessions) as session:
        for i, client in enumerate(clients):
            await repo.create_case(session, client=client, category="housing")
            if i % 50 == 0:
                await repo.create_case(session, client=client, category="housing")
    opted = {c.id for c in clients[3::97]}
    for c in clients[3::97]:
        await opt_out(svc, c)
    discreet = clients[5]
    async with transaction(svc.sessions) as session:
        row = await session.get(Client, discreet.id)
        assert row is not None
        row.discreet = True
        session.add(row)
    erased = clients[7]
    async with transaction(svc.sessions) as session:
        row = await session.get(Client, erased.id)
        assert row is not None
        await repo.erase_client(session, client=row)

    p = await make_plan(svc, "category=housing", TEXTS)
    skipped = {s.client_id: s.reason for s in p.skipped}
    assert {cid for cid, why in skipped.items() if why == broadcast.SKIP_OPTED_OUT} == opted
    assert skipped[discreet.id] == broadcast.SKIP_DISCREET
    assert skipped[erased.id] == broadcast.SKIP_ERASED
    assert len(p.recipients) == 1000 - len(opted) - 2
    assert not p.missing_languages and p.refused is None

    row = await send_plan(svc, p)
    assert row.id is not None and row.status == broadcast.SENDING
    rows = await rows_of(svc, row.id)
    per_client = Counter(item.client_id for item, _ in rows)
    assert len(per_client) == 1000 and set(per_client.values()) == {1}
    lang_of = {c.id: c.language for c in clients}
    for item, body in rows:
        if item.client_id in skipped:
            assert item.status == OutboxStatus.SKIPPED
            assert item.last_error == skipped[item.client_id]
            assert body == ""  # nothing written for someone who gets nothing
        else:
            assert item.status == OutboxStatus.PENDING
            assert body == TEXTS[lang_of[item.client_id]]
            assert item.kind == "broadcast" and item.priority == Priority.BROADCAST
            assert not item.urgent  # quiet hours hold it
            assert item.dedupe_key == f"broadcast:{row.id}:{item.client_id}"
    rep = await report(svc, row.id)
    assert rep.pending == len(p.recipients)
    assert rep.skipped == {
        broadcast.SKIP_OPTED_OUT: len(opted),
        broadcast.SKIP_DISCREET: 1,
        broadcast.SKIP_ERASED: 1,
    }

    # The same broadcast queued again (a retry) adds nothing.
    p.broadcast_id = row.id
    await send_plan(svc, p)
    assert len(await rows_of(svc, row.id)) == 1000


async def test_discreet_clients_get_only_texts_marked_safe(svc: Services) -> None:
    plain = await add_client(svc, 1)
    by_client = await add_client(svc, 2, discreet=True)
    by_case = await add_client(svc, 3)
    async with transaction(svc.sessions) as session:
        await repo.create_case(session, client=by_case, category="family", discreet=True)
    unsafe = await make_plan(svc, "all", {"en": "Office closed Monday."})
    assert client_ids(unsafe) == {plain.id}
    assert {s.client_id for s in unsafe.skipped if s.reason == broadcast.SKIP_DISCREET} == {
        by_client.id,
        by_case.id,
    }
    safe = await make_plan(svc, "all", {"en": "Office closed Monday."}, discreet_safe=True)
    assert client_ids(safe) == {plain.id, by_client.id, by_case.id}


async def test_missing_language_is_refused_unless_a_fallback_is_chosen(svc: Services) -> None:
    en = await add_client(svc, 1, language="en")
    ht = await add_client(svc, 2, language="ht")
    p = await make_plan(svc, "all", {"en": "Office closed Monday."})
    assert p.missing_languages == {"ht": 1}
    assert p.refused is not None and "ht (1)" in p.refused
    with pytest.raises(broadcast.BroadcastError, match="no text for ht"):
        await send_plan(svc, p)
    async with svc.sessions() as session:
        assert (await session.exec(select(func.count()).select_from(Broadcast))).one() == 0
    with pytest.raises(broadcast.BroadcastError, match="fallback language es has no text"):
        await make_plan(svc, "all", {"en": "x"}, fallback_language="es")
    p = await make_plan(svc, "all", {"en": "Office closed Monday."}, fallback_language="en")
    assert p.refused is None
    row = await send_plan(svc, p)
    assert row.id is not None
    bodies = {item.client_id: body for item, body in await rows_of(svc, row.id)}
    assert bodies == {en.id: "Office closed Monday.", ht.id: "Office closed Monday."}


async def test_bad_texts_are_refused(svc: Services) -> None:
    await add_client(svc, 1)
    with pytest.raises(broadcast.BroadcastError, match="not an offered language"):
        await make_plan(svc, "all", {"fr": "Bonjour"})
    with pytest.raises(broadcast.BroadcastError, match="en text is empty"):
        await make_plan(svc, "all", {"en": "   "})
    with pytest.raises(broadcast.BroadcastError, match="longer than 1600"):
        await make_plan(svc, "all", {"en": "x" * 1601})
    with pytest.raises(broadcast.BroadcastError, match="at least one text"):
        await make_plan(svc, "all", {})


async def test_dry_run_describes_counts_missing_cost_and_preview(svc: Services) -> None:
    for i in range(3):
        client = await add_client(svc, i, language="en")
        if i:
            async with transaction(svc.sessions) as session:
                assert client.id is not None
                ident = await repo.reply_identity(session, client_id=client.id)
                assert ident is not None
                ident.notice_sent_at = svc.clock()
                session.add(ident)
    await add_client(svc, 10, language="es")
    await add_client(svc, 11, language="zh", channel=Channel.TELEGRAM)
    opted = await add_client(svc, 12, language="es")
    await opt_out(svc, opted)
    es_text = "La oficina está cerrada el lunes."  # á: UCS-2
    p = await make_plan(
        svc, "all", {"en": "Office closed Monday.", "es": es_text}, fallback_language="en"
    )
    text = "\n".join(broadcast.describe(p))
    assert "Segment: all" in text
    assert "Recipients: 5 (sms 4, telegram 1)" in text
    assert "  en: 3 (sms 3)" in text
    assert "  es: 1 (sms 1)" in text
    assert "  zh: 1 (telegram 1) - no zh text, gets the en text" in text
    assert "Missing texts: zh (1) - they get the en text" in text
    assert "Skipped: 1 opted out" in text
    # The dispatcher adds "Reply STOP to opt out..." to a first message: it is counted. Two en
    # clients have had it already; the es copy with it no longer fits one UCS-2 segment.
    notice = "; 1 first copies add the opt-out notice"
    assert f"  en: 1 segment (GSM-7, 21 units) x 3 = 3{notice}" in text
    assert f"  es: 1 segment (UCS-2, {len(es_text)} units) x 1 = 2{notice}" in text
    # Five SMS segments at the default 0.0079 USD.
    assert "total: 5 segments, about $0.04 at $0.0079 a segment" in text
    assert "[en] Office closed Monday." in text
    assert f"[es] {es_text}" in text


async def test_cost_counts_long_texts_in_segments(svc: Services) -> None:
    for i in range(10):
        await add_client(svc, i, language="es")
    long_es = "Información importante sobre su audiencia. " * 4  # UCS-2, 171 units trimmed
    p = await make_plan(svc, "all", {"es": long_es})
    [cost] = p.costs()
    assert (cost.encoding, cost.units, cost.segments) == ("UCS-2", 171, 3)  # 67 units a part
    # Each is a first message: with the 50-unit opt-out notice it takes four segments.
    assert (cost.sms_recipients, cost.with_notice, cost.total_segments) == (10, 10, 40)
    assert p.estimated_cost == pytest.approx(40 * 0.0079)


# --------------------------------------------------------------------------- scheduling


async def test_at_schedules_and_the_handler_queues_it_then(svc: Services, clock: FakeClock) -> None:
    a = await add_client(svc, 1)
    p = await make_plan(svc, "all", {"en": "Clinic tomorrow."})
    at = clock() + timedelta(hours=3)
    row = await send_plan(svc, p, at=at)
    assert row.id is not None and row.status == broadcast.SCHEDULED
    assert await rows_of(svc, row.id) == []
    async with svc.sessions() as session:
        item = (
            await session.exec(select(ScheduledItem).where(ScheduledItem.broadcast_id == row.id))
        ).one()
    assert item.kind == "broadcast" and item.unique_key == f"broadcast:{row.id}"
    assert item.due_at == at
    # A client who arrives before the time is included: the plan is worked out again then.
    b = await add_client(svc, 2)
    scheduler = Scheduler(svc)
    clock.advance(hours=2, minutes=59)
    assert (await scheduler.tick(checkins=False)).claimed == 0
    assert await rows_of(svc, row.id) == []
    clock.advance(minutes=1)
    assert (await scheduler.tick(checkins=False)).done == 1
    bodies = {i.client_id: body for i, body in await rows_of(svc, row.id)}
    assert bodies == {a.id: "Clinic tomorrow.", b.id: "Clinic tomorrow."}
    async with svc.sessions() as session:
        done = await session.get(ScheduledItem, item.id)
        assert done is not None and done.status == ScheduleStatus.DONE
    assert (await report(svc, row.id)).status == broadcast.SENDING
    # Running the handler again (a retry after a crash) adds nothing.
    async with transaction(svc.sessions) as session:
        assert await broadcast.run_scheduled(session, svc, item) is None
    assert len(await rows_of(svc, row.id)) == 2


async def test_cancelling_a_scheduled_broadcast(svc: Services, clock: FakeClock) -> None:
    await add_client(svc, 1)
    p = await make_plan(svc, "all", {"en": "Clinic tomorrow."})
    row = await send_plan(svc, p, at=clock() + timedelta(days=1))
    assert row.id is not None
    async with transaction(svc.sessions) as session:
        assert await broadcast.cancel(session, svc, row.id) == 0
    async with svc.sessions() as session:
        item = (
            await session.exec(select(ScheduledItem).where(ScheduledItem.broadcast_id == row.id))
        ).one()
        assert item.status == ScheduleStatus.CANCELLED
    clock.advance(days=2)
    assert (await Scheduler(svc).tick(checkins=False)).claimed == 0
    async with transaction(svc.sessions) as session:
        assert await broadcast.run_scheduled(session, svc, item) == ScheduleStatus.CANCELLED
    assert await rows_of(svc, row.id) == []
    assert (await report(svc, row.id)).status == broadcast.CANCELLED


# --------------------------------------------------------------------------- sending


async def test_two_hundred_clients_through_the_dispatcher_one_message_each(
    svc: Services, twilio: FakeTwilio
) -> None:
    lang_of: dict[str, str] = {}
    for i in range(200):
        await add_client(svc, i, language=LANGS[i % 6])
        lang_of[phone(i)] = LANGS[i % 6]
    opted = await add_client(svc, 500, language="es")
    await opt_out(svc, opted)
    row = await send_plan(svc, await make_plan(svc, "all", TEXTS))
    assert row.id is not None
    await Dispatcher(svc).drain()
    bodies = sent_bodies(twilio)
    assert len(bodies) == 200 and phone(500) not in bodies
    for number, body in bodies.items():
        assert body == TEXTS[lang_of[number]], number
    rep = await report(svc, row.id)
    assert (rep.sent, rep.pending, rep.skipped, rep.status) == (
        200,
        0,
        {"opted out": 1},
        broadcast.DONE,
    )
    # A retry of the whole broadcast sends nothing more.
    twilio.expect_no_more()
    async with svc.sessions() as session:
        await broadcast.resume(session, svc, row.id, commit_batches=True)
    await Dispatcher(svc).drain()
    assert len(twilio.messages) == 200


async def test_cancel_midway_then_nothing_more_goes_out(svc: Services, twilio: FakeTwilio) -> None:
    for i in range(120):
        await add_client(svc, i, language=LANGS[i % 6])
    p = await make_plan(svc, "all", TEXTS)
    row = await send_plan(svc, p)
    assert row.id is not None
    dispatcher = Dispatcher(svc, batch_size=30)
    await dispatcher.run_once()
    assert len(twilio.messages) == 30
    async with transaction(svc.sessions) as session:
        cancelled = await broadcast.cancel(session, svc, row.id)
    assert cancelled == 90
    twilio.expect_no_more()
    await dispatcher.drain()
    rep = await report(svc, row.id)
    assert (rep.sent, rep.cancelled, rep.pending, rep.status) == (30, 90, 0, broadcast.CANCELLED)
    # Queueing the cancelled broadcast again is refused, so nothing is re-sent.
    with pytest.raises(broadcast.BroadcastError, match="cancelled"):
        async with svc.sessions() as session:
            await broadcast.resume(session, svc, row.id)
    await dispatcher.drain()
    assert len(twilio.messages) == 30


async def test_resume_after_a_crash_creates_no_duplicates(
    svc: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(250):
        await add_client(svc, i, language=LANGS[i % 6])
    monkeypatch.setattr(broadcast, "BATCH_SIZE", 100)
    p = await make_plan(svc, "all", TEXTS)

    class Crash(Exception):
        pass

    def crash_after_first_batch(done: int, total: int) -> None:
        if done >= 100:
            raise Crash

    with pytest.raises(Crash):
        async with svc.sessions() as session:
            await broadcast.enqueue(
                session, svc, p, commit_batches=True, progress=crash_after_first_batch
            )
    assert p.broadcast_id is not None
    assert len(await rows_of(svc, p.broadcast_id)) == 100  # the first batch was committed
    seen: list[tuple[int, int]] = []
    async with svc.sessions() as session:
        await broadcast.resume(
            session,
            svc,
            p.broadcast_id,
            commit_batches=True,
            progress=lambda done, total: seen.append((done, total)),
        )
    assert seen[-1] == (250, 250)
    rows = await rows_of(svc, p.broadcast_id)
    assert len(rows) == 250
    assert len({item.client_id for item, _ in rows}) == 250
    async with svc.sessions() as session:
        await broadcast.resume(session, svc, p.broadcast_id, commit_batches=True)
    assert len(await rows_of(svc, p.broadcast_id)) == 250


async def test_replies_go_before_broadcast_and_quiet_hours_hold_it(
    database_url: str, tmp_path: Path, clock: FakeClock, twilio: FakeTwilio
) -> None:
    settings = twilio_settings(database_url, tmp_path / "d", twilio, QUIET_HOURS="21:00-08:00")
    services = await with_twilio(settings, clock)
    try:
        clients = [await add_client(services, i) for i in range(5)]
        waiting = await add_client(services, 99)
        row = await send_plan(services, await make_plan(services, "all", {"en": "News."}))
        assert row.id is not None
        async with transaction(services.sessions) as session:
            await queue_reply(session, services, waiting, Reply("Your answer."))
        await Dispatcher(services, batch_size=1).run_once()
        assert sent_bodies(twilio) == {phone(99): "Your answer."}
        # 23:30 in New York: the broadcast waits for the morning.
        clock.set(datetime(2026, 3, 3, 4, 30, tzinfo=UTC))
        await Dispatcher(services).drain()
        assert len(twilio.messages) == 1
        rep = await report(services, row.id)
        assert rep.pending == len(clients) + 1
        clock.set(datetime(2026, 3, 3, 13, 5, tzinfo=UTC))  # 08:05 in New York
        await Dispatcher(services).drain()
        assert len(twilio.messages) == len(clients) + 2
        rep = await report(services, row.id)
        assert (rep.sent, rep.pending, rep.status) == (len(clients) + 1, 0, broadcast.DONE)
    finally:
        await services.close()


async def test_report_counts_every_outcome(svc: Services) -> None:
    clients = [await add_client(svc, i) for i in range(4)]
    await opt_out(svc, clients[3])
    row = await send_plan(svc, await make_plan(svc, "all", {"en": "News."}))
    assert row.id is not None
    rows = await rows_of(svc, row.id)
    async with transaction(svc.sessions) as session:
        # As the dispatcher and Twilio's status callbacks would leave them.
        statuses = [
            (OutboxStatus.SENT, MessageStatus.DELIVERED),
            (OutboxStatus.SENT, MessageStatus.UNDELIVERED),
            (OutboxStatus.FAILED, MessageStatus.FAILED),
        ]
        for (item, _), (out_status, msg_status) in zip(rows[:3], statuses, strict=True):
            db_item = await session.get(OutboxItem, item.id)
            msg = await session.get(Message, item.message_id)
            assert db_item is not None and msg is not None
            db_item.status = out_status
            msg.status = msg_status
            session.add(db_item)
            session.add(msg)
    rep = await report(svc, row.id)
    assert (rep.sent, rep.delivered, rep.failed, rep.pending) == (1, 1, 2, 0)
    assert rep.skipped == {"opted out": 1}
    assert rep.status == broadcast.DONE
    lines = "\n".join(rep.lines())
    assert "sent:      1 (1 delivered)" in lines
    assert "skipped:   1 (1 opted out)" in lines
    assert "Broadcast" in broadcast.progress_text(rep) and "100%" in broadcast.progress_text(rep)


# --------------------------------------------------------------------------- the wizard


async def test_wizard_walks_segment_texts_fallback_discreet_and_sends(svc: Services) -> None:
    for i in range(3):
        await add_client(svc, i, language="en")
    await add_client(svc, 10, language="es")
    await add_client(svc, 11, language="ht", discreet=True)
    step = wizard.start()
    assert "Who should get it?" in step.text

    async def say(text: str) -> wizard.WizardStep:
        state = wizard.WizardState.from_dict(step.state.to_dict())  # kept as JSON between turns
        async with svc.sessions() as session:
            return await wizard.advance(session, svc, state, text)

    step = await say("colour=blue")
    assert "unknown segment key 'colour'" in step.text and step.state.step == wizard.SEGMENT
    step = await say("all")
    assert "5 clients match all (en 3, es 1, ht 1)." in step.text
    assert "English (en)" in step.text
    step = await say("Office closed Monday.")
    assert "Español (es)" in step.text
    step = await say("La oficina está cerrada el lunes.")
    step = await say("skip")
    assert "No text for ht" in step.text and step.choices == ("en", "es")
    step = await say("fr")
    assert "Answer with one of: en, es." in step.text
    step = await say("en")
    assert "1 of these clients are in discreet mode" in step.text
    step = await say("yes")
    assert "Recipients: 5 (sms 5)" in step.text
    assert "ht: 1 (sms 1) - no ht text, gets the en text" in step.text
    assert step.state.step == wizard.CONFIRM and not step.send
    step = await say("yes")
    assert step.send and step.finished
    row = await wizard.send(svc, step.state, staff_id=None)
    assert row.id is not None and step.state.broadcast_id == row.id
    text, done = await wizard.progress(svc, row.id)
    assert text.startswith(f"Broadcast {row.id}: ") and "0%" in text and not done
    bodies = sorted(body for _, body in await rows_of(svc, row.id))
    assert bodies == sorted(["Office closed Monday."] * 4 + ["La oficina está cerrada el lunes."])


async def test_wizard_cancel_and_schedule(svc: Services, clock: FakeClock) -> None:
    await add_client(svc, 1)
    state = wizard.start().state
    async with svc.sessions() as session:
        step = await wizard.advance(session, svc, state, "all")
        step = await wizard.advance(session, svc, step.state, "cancel")
    assert step.finished and step.state.step == wizard.CANCELLED and not step.send
    state = wizard.start().state
    async with svc.sessions() as session:
        step = await wizard.advance(session, svc, state, "language=vi")
        assert "Nobody reachable matches language=vi" in step.text
        step = await wizard.advance(session, svc, step.state, "all")
        step = await wizard.advance(session, svc, step.state, "Clinic Friday.")
        step = await wizard.advance(session, svc, step.state, "at 2026-03-04 09:00")
    assert step.send
    row = await wizard.send(svc, step.state, staff_id=None)
    assert row.status == broadcast.SCHEDULED
    assert row.scheduled_at == datetime(2026, 3, 4, 14, 0, tzinfo=UTC)  # 09:00 in New York
    text, done = await wizard.progress(svc, row.id or 0)
    assert text == f"Broadcast {row.id}: scheduled for 2026-03-04 09:00" and not done
