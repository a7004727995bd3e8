"""Staff-only attempts from Telegram accounts that are not (or no longer) staff: each is
answered as any text from that account and leaves a refused audit row naming the actor."""

from __future__ import annotations

from typing import Any

from sqlmodel import select

from storage import repo
from storage.db import transaction
from storage.models import AuditLog, Case, Channel, Client, Direction, Message, Staff
from tests.fakes.telegram_harness import Harness, Role, User, tg

__all__ = ["tg"]

GAIL, MARIA, ANA = User(7000, "Gail"), User(7001, "Maria"), User(8001, "Ana")
STRANGER, CONTROL = User(9901, "Mallory"), User(9902, "Trudy")
PHONE = "+12025550143"
LOCKS = "The landlord changed the locks today"
NOTE = "Please call me back today"


async def _client_of(tg: Harness, user: User) -> int:
    async with tg.services.sessions() as session:
        ident = await repo.find_identity(
            session, vault=tg.services.vault, channel=Channel.TELEGRAM, address=str(user.id)
        )
    assert ident is not None and ident.client_id is not None
    return ident.client_id


def _seen(tg: Harness, user: User, since: int = 0) -> list[tuple[str, Any]]:
    return [(c.text, c.inline_buttons) for c in tg.fake.sent(user.id)[since:]]


async def _ordinary_first_answer(tg: Harness) -> list[tuple[str, Any]]:
    """What a new account is told for its first plain text: the link offer, then intake."""
    tg.fake.add_chat(CONTROL.id)
    await tg.send(tg.updates.text(CONTROL, "hello"))
    seen = _seen(tg, CONTROL)
    assert len(seen) == 2 and "Share my phone number" in seen[0][0]
    return seen


async def _refusals(tg: Harness) -> list[AuditLog]:
    return [a for a in await tg.audits() if not a.allowed]


async def _setup(tg: Harness, attorney: Staff) -> tuple[Client, int]:
    rosa = await tg.add_sms_client(PHONE)
    case = await tg.open_case(rosa, attorney=attorney)
    await tg.sms(PHONE, LOCKS)  # a card about it goes to the attorney
    assert rosa.id is not None and case.id is not None
    return rosa, case.id


async def test_broadcast_from_a_client_or_stranger_is_refused_and_audited(tg: Harness) -> None:
    await tg.add_staff("Carla Reyes", Role.COORDINATOR, 7100)
    maria = await tg.add_staff("Maria Lopez", Role.ATTORNEY, MARIA.id)
    rosa, _case_id = await _setup(tg, maria)
    ana = await tg.add_telegram_client(ANA)
    own = await tg.open_case(ana, category="family", attorney=maria)
    tg.fake.add_chat(STRANGER.id)
    ordinary = await _ordinary_first_answer(tg)
    staff_seen = len(tg.fake.sent(MARIA.id)) + len(tg.fake.sent(7100))
    rosa_sms = len(tg.twilio.sent_to(PHONE))

    update = tg.updates.text(STRANGER, "/broadcast")
    await tg.send(update)
    await tg.send(update)  # Telegram resending it: handled, and audited, once
    await tg.send(tg.updates.text(ANA, "/broadcast"))

    # Answered as any first text: no wizard, nothing about broadcasts or cases.
    assert _seen(tg, STRANGER) == ordinary
    # A client with a case is shown her own case's menu, as for any text.
    await tg.send(tg.updates.text(ANA, "hello"))
    (told, _), (to_hello, _) = _seen(tg, ANA)
    assert told == to_hello == f"Your case {own.reference}. What would you like to do?"
    assert len(tg.fake.sent(MARIA.id)) + len(tg.fake.sent(7100)) == staff_seen
    assert len(tg.twilio.sent_to(PHONE)) == rosa_sms
    refused = [
        (a.actor_kind, a.actor_id, a.action, a.client_id, a.case_id, a.detail)
        for a in await _refusals(tg)
    ]
    detail = "/broadcast from a non-staff Telegram account"
    assert refused == [
        ("client", None, "staff.command", await _client_of(tg, STRANGER), None, detail),
        ("client", None, "staff.command", ana.id, None, detail),
    ]
    assert rosa.id not in {r[3] for r in refused}


async def test_status_from_a_client_is_not_a_staff_command(tg: Harness) -> None:
    await tg.add_telegram_client(ANA)
    await tg.send(tg.updates.text(ANA, "/status"))
    assert _seen(tg, ANA)  # answered by the client conversation
    assert await tg.audits("staff.command") == []


async def test_forged_staff_buttons_in_a_private_chat_are_refused_and_audited(
    tg: Harness,
) -> None:
    maria = await tg.add_staff("Maria Lopez", Role.ATTORNEY, MARIA.id)
    ben = await tg.add_staff("Ben Okafor", Role.ATTORNEY, 7002)
    rosa, case_id = await _setup(tg, maria)
    ana = await tg.add_telegram_client(ANA)
    tg.fake.add_chat(STRANGER.id)
    ordinary = await _ordinary_first_answer(tg)
    maria_seen = len(tg.fake.sent(MARIA.id))

    await tg.send(tg.updates.callback(STRANGER, f"assignto:{case_id}:{ben.id}"))
    await tg.send(tg.updates.callback(ANA, f"assign:{case_id}"))
    await tg.send(tg.updates.callback(ANA, "bcast:Send"))

    # Nothing acted on: the case stays with Maria, nobody is offered attorneys or told.
    async with tg.services.sessions() as session:
        case = await session.get(Case, case_id)
    assert case is not None
    assert case.assigned_staff_id == maria.id
    assert _seen(tg, STRANGER) == ordinary
    told_ana = "\n".join(text for text, _ in _seen(tg, ANA))
    assert case.reference not in told_ana and "Who should handle" not in told_ana
    assert tg.fake.sent(7002) == [] and len(tg.fake.sent(MARIA.id)) == maria_seen
    refused = [
        (a.actor_kind, a.actor_id, a.action, a.client_id, a.case_id, a.detail)
        for a in await _refusals(tg)
    ]
    detail = "staff button from a non-staff account"
    stranger = await _client_of(tg, STRANGER)
    assert refused == [
        ("client", None, "staff.command", stranger, None, detail),
        ("client", None, "staff.command", ana.id, None, detail),
        ("client", None, "staff.command", ana.id, None, detail),
    ]
    assert rosa.id not in {r[3] for r in refused}


async def test_a_former_attorneys_reply_to_an_old_card_is_not_relayed_and_is_audited(
    tg: Harness,
) -> None:
    gail = await tg.add_staff("Gail Former", Role.ATTORNEY, GAIL.id)
    maria = await tg.add_staff("Maria Lopez", Role.ATTORNEY, MARIA.id)
    rosa, case_id = await _setup(tg, gail)
    async with transaction(tg.services.sessions) as session:
        case = await session.get(Case, case_id)
        row = await session.get(Staff, gail.id)
        assert case is not None and row is not None
        card = tg.card_of(GAIL.id, case.reference)
        row.active = False
        case.assigned_staff_id = maria.id
        session.add_all([row, case])
    ordinary = await _ordinary_first_answer(tg)
    rosa_sms, maria_seen, gail_seen = (
        len(tg.twilio.sent_to(PHONE)),
        len(tg.fake.sent(MARIA.id)),
        len(tg.fake.sent(GAIL.id)),
    )

    await tg.send(tg.updates.text(GAIL, NOTE, reply_to=card))

    # Not relayed: Rosa hears nothing, her attorney is not told; Gail is answered as any new
    # account's first text (the link offer and intake), which says nothing about the case.
    assert len(tg.twilio.sent_to(PHONE)) == rosa_sms
    assert len(tg.fake.sent(MARIA.id)) == maria_seen
    assert _seen(tg, GAIL, gail_seen) == ordinary
    gail_client = await _client_of(tg, GAIL)
    refused = [
        (a.actor_kind, a.actor_id, a.action, a.client_id, a.case_id, a.allowed, a.detail)
        for a in await tg.audits()
        if a.client_id == gail_client or not a.allowed
    ]
    assert refused == [
        (
            "client",
            None,
            "relay.reply",
            gail_client,
            case_id,
            False,
            "reply to a card from an account not staff",
        )
    ]
    assert gail_client != rosa.id
    assert all(NOTE not in (a.detail or "") for a in await tg.audits())
    # The words stay this account's own message, on no case.
    async with tg.services.sessions() as session:
        kept = (
            await session.exec(
                select(Message).where(
                    Message.client_id == gail_client, Message.direction == Direction.IN
                )
            )
        ).all()
    assert [m.case_id for m in kept] == [None]


async def test_a_clients_reply_to_the_bot_is_not_audited(tg: Harness) -> None:
    await tg.add_telegram_client(ANA)
    await tg.send(tg.updates.text(ANA, "hello"))
    last = tg.fake.sent(ANA.id)[-1]
    question = tg.updates.bot_message(ANA.id, last.message_id, last.text)
    await tg.send(tg.updates.text(ANA, "1", reply_to=question))
    assert _seen(tg, ANA)[-1][0] != last.text  # the answer was taken as any other
    assert await _refusals(tg) == []
