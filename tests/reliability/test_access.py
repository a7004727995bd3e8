"""Access: who may see and do what, over every staff command and client keyword, per role."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlmodel import col, func, select

from bot.casework import appointments
from bot.casework.base import CLI
from bot.conversations import relay
from bot.handlers import staff as staff_handlers
from storage import repo
from storage.db import transaction
from storage.models import Appointment, AuditLog, Case, Role, Staff, StaffDialogue
from tests.fakes.telegram_harness import Harness, User, tg
from tests.reliability.conftest import say

pytestmark = [pytest.mark.reliability]

__all__ = ["tg"]

VICTIM_PHONE = "+12025550143"
STRANGER_PHONE = "+12025550901"
PROBER_PHONE = "+12025550902"
GONE, BEN, MARIA, CARLA = (
    User(7000, "Gail"),
    User(7002, "Ben"),
    User(7001, "Maria"),
    User(7100, "Carla"),
)
ANA, STRANGER, PROBER = User(8001, "Ana"), User(9901, "Mallory"), User(9902, "Trudy")
FAKE_REF = "QQQ-QQQ"  # a well-formed reference no case has
LOCKS = "The landlord changed the locks today"
STATUS_TEXT = "Hearing scheduled"
STATUS_LABEL = "a court date has been set"  # what the victim reads for STATUS_TEXT
PLACE = "Courtroom 5, 111 Centre St"
HEARING = datetime(2026, 3, 10, 14, 30, tzinfo=UTC)
NOTE = "Please call me back today"

# The victim's case, as nobody but its attorney may read it (the reference is checked apart:
# an actor who typed it may see it echoed).
CONTENT = ("Rosa", "Diaz", VICTIM_PHONE, VICTIM_PHONE[2:], LOCKS, PLACE)
CASE_DATA = (STATUS_TEXT, STATUS_LABEL, "2026-03-10", "Maria")

REFUSED, ALLOWED, SCOPED, IGNORED = "refused", "allowed", "scoped", "ignored"


@dataclass
class World:
    """The victim's case, its history of attorneys, and everyone who will try to reach it."""

    case_id: int
    victim_id: int
    reference: str
    own_reference: str  # the client role's own case
    staff: dict[str, Staff]


@dataclass(frozen=True)
class Actor:
    """One role: how it reaches the bot, and which reference it aims at."""

    role: str
    user: User
    phone: str | None  # client keywords go by SMS when set, else by Telegram
    staff: str | None  # key into World.staff while this role is active staff
    knows_reference: bool = True


ROLES: dict[str, Actor] = {
    "client": Actor("client", ANA, None, None),
    "stranger": Actor("stranger", STRANGER, STRANGER_PHONE, None, knows_reference=False),
    "stranger+ref": Actor("stranger+ref", PROBER, PROBER_PHONE, None),
    "attorney, not assigned": Actor("attorney, not assigned", BEN, None, "ben"),
    "assigned attorney": Actor("assigned attorney", MARIA, None, "maria"),
    "coordinator": Actor("coordinator", CARLA, None, "carla"),
    "deactivated staff": Actor("deactivated staff", GONE, None, None),
}


async def _build(h: Harness) -> World:
    """Rosa's case went from Gail (since deactivated) to Ben to Maria, and each of them was
    sent her messages as cards; Ana has a case of her own, with Ben."""
    gone = await h.add_staff("Gail Former", Role.ATTORNEY, GONE.id)
    ben = await h.add_staff("Ben Okafor", Role.ATTORNEY, BEN.id)
    maria = await h.add_staff("Maria Lopez", Role.ATTORNEY, MARIA.id)
    carla = await h.add_staff("Carla Reyes", Role.COORDINATOR, CARLA.id)
    victim = await h.add_sms_client(VICTIM_PHONE, name="Rosa Diaz")
    case = await h.open_case(victim, attorney=gone)
    await h.sms(VICTIM_PHONE, LOCKS)
    await h.assign(case, ben)
    await h.sms(VICTIM_PHONE, f"{LOCKS} (again)")
    async with transaction(h.services.sessions) as session:
        row = await session.get(Staff, gone.id)
        assert row is not None
        row.active = False
        session.add(row)
    await h.assign(case, maria)
    await h.sms(VICTIM_PHONE, f"{LOCKS} (third time)")
    async with transaction(h.services.sessions) as session:
        fresh = await session.get(Case, case.id)
        assert fresh is not None
        await repo.record_status(session, case=fresh, status=STATUS_TEXT, at=h.clock())
        await appointments.book(
            session, h.services, fresh, HEARING, PLACE, kind="hearing", actor=CLI
        )
    ana = await h.add_telegram_client(ANA, name="Ana Ruiz")
    own = await h.open_case(ana, category="family", attorney=ben)
    for user in (STRANGER, PROBER):
        h.fake.add_chat(user.id)
    await h.settle()
    assert case.id is not None
    assert victim.id is not None
    return World(
        case.id,
        victim.id,
        case.reference,
        own.reference,
        {"ben": ben, "maria": maria, "carla": carla, "gone": gone},
    )


# --------------------------------------------------------------------------- actions


Act = Callable[[Harness, World, Actor], Awaitable[str]]


def _ref(w: World, a: Actor) -> str:
    return w.reference if a.knows_reference else FAKE_REF


async def _tg_text(h: Harness, a: Actor, text: str, **kw: Any) -> str:
    await h.send(h.updates.text(a.user, text, **kw))
    return text


def _command(template: str) -> Act:
    async def act(h: Harness, w: World, a: Actor) -> str:
        return await _tg_text(h, a, template.format(ref=_ref(w, a), note=NOTE))

    return act


async def _assign_button(h: Harness, w: World, a: Actor) -> str:
    """A forged press of 'assign this case to Ben' (callback data is not vouched for)."""
    data = f"assignto:{w.case_id}:{w.staff['ben'].id}"
    await h.send(h.updates.callback(a.user, data))
    return data


async def _card_reply(h: Harness, w: World, a: Actor) -> str:
    """A reply to the last card about the case this account was sent (the old attorney's too)."""
    await _tg_text(h, a, NOTE, reply_to=h.card_of(a.user.id, w.reference))
    return NOTE


async def _keyword(h: Harness, a: Actor, text: str) -> str:
    if a.phone is not None:
        await h.sms(a.phone, text)
        return text
    return await _tg_text(h, a, text)


async def _status_with_ref(h: Harness, w: World, a: Actor) -> str:
    return await _keyword(h, a, f"STATUS {_ref(w, a)}")


async def _status_bare(h: Harness, w: World, a: Actor) -> str:
    return await _keyword(h, a, "STATUS")


async def _status_button(h: Harness, w: World, a: Actor) -> str:
    """The menu's 'my case status' button, pressed (or forged) in the actor's own chat."""
    await h.send(h.updates.callback(a.user, "status"))
    return "status"


async def _reference_alone(h: Harness, w: World, a: Actor) -> str:
    """Just the reference, as someone who found it on a letter might text it."""
    return await _keyword(h, a, _ref(w, a))


async def _link_contact(h: Harness, w: World, a: Actor) -> str:
    """Sharing the victim's phone number as a contact, to take over her case's chat."""
    await h.send(h.updates.contact(a.user, VICTIM_PHONE[1:], contact_user_id=None))
    return VICTIM_PHONE


ACTIONS: dict[str, Act] = {
    "/cases": _command("/cases"),
    "/case": _command("/case {ref}"),
    "/find": _command("/find {ref}"),
    "/reply": _command("/reply {ref} {note}"),
    "/status": _command("/status {ref} Settled"),
    "/assign": _command("/assign {ref}"),
    "assign button": _assign_button,
    "/appt": _command("/appt {ref} 2026-03-20 10:00 Room 9"),
    "/broadcast": _command("/broadcast"),
    "card reply": _card_reply,
    "STATUS ref": _status_with_ref,
    "STATUS": _status_bare,
    "status button": _status_button,
    "link contact": _link_contact,
    "reference alone": _reference_alone,
}
KEYWORD_ACTIONS = ("STATUS ref", "STATUS", "status button", "link contact")
STAFF_ROLES = ("attorney, not assigned", "assigned attorney", "coordinator")

# What each role may do; every other applicable cell must be refused and audited.
ALLOWED_CELLS: dict[tuple[str, str], str] = {
    ("attorney, not assigned", "/cases"): SCOPED,
    ("coordinator", "/cases"): SCOPED,
    ("coordinator", "/case"): ALLOWED,
    ("coordinator", "/find"): ALLOWED,
    ("coordinator", "/status"): ALLOWED,
    ("coordinator", "/assign"): ALLOWED,
    ("coordinator", "assign button"): ALLOWED,
    ("coordinator", "/appt"): ALLOWED,
    ("coordinator", "/broadcast"): ALLOWED,
    ("assigned attorney", "/cases"): ALLOWED,
    ("assigned attorney", "/case"): ALLOWED,
    ("assigned attorney", "/find"): ALLOWED,
    ("assigned attorney", "/reply"): ALLOWED,
    ("assigned attorney", "/status"): ALLOWED,
    ("assigned attorney", "card reply"): ALLOWED,
    ("client", "STATUS"): SCOPED,
    ("client", "status button"): SCOPED,
}


def expectation(role: str, action: str) -> str | None:
    """REFUSED, ALLOWED, SCOPED (allowed, and the victim's case stays out of it) or IGNORED
    (not a request: answered as any text, nothing revealed); None where the cell does not
    exist: staff have no client keywords, only former or current attorneys of the case were
    sent its cards."""
    if action == "reference alone":
        return IGNORED
    if role in STAFF_ROLES and action in KEYWORD_ACTIONS:
        return None
    if action == "card reply" and role not in (
        "attorney, not assigned",
        "assigned attorney",
        "deactivated staff",
    ):
        return None
    return ALLOWED_CELLS.get((role, action), REFUSED)


class Unaudited(AssertionError):
    """A refused cell that left no audit row."""


def _cells() -> list[Any]:
    out = []
    for role in ROLES:
        for action in ACTIONS:
            expected = expectation(role, action)
            if expected is None:
                continue
            out.append(pytest.param(role, action, expected, id=f"{role}|{action}"))
    return out


# --------------------------------------------------------------------------- looking


@dataclass
class Snapshot:
    """What a refused cell must leave as it was, and where to look for what it caused."""

    telegram_calls: int
    sms: int
    audit_id: int
    status: str
    assigned: int | None
    appointments: int
    victim_sms: int


async def _snapshot(h: Harness, w: World) -> Snapshot:
    async with h.services.sessions() as session:
        case = await session.get(Case, w.case_id)
        assert case is not None
        last = (await session.exec(select(func.max(AuditLog.id)))).one()
        appts = (await session.exec(select(func.count()).select_from(Appointment))).one()
    return Snapshot(
        len(h.fake.calls),
        len(h.twilio.messages),
        int(last or 0),
        case.status,
        case.assigned_staff_id,
        int(appts),
        len(h.twilio.sent_to(VICTIM_PHONE)),
    )


async def _new_audits(h: Harness, since: int) -> list[AuditLog]:
    async with h.services.sessions() as session:
        rows = await session.exec(
            select(AuditLog).where(col(AuditLog.id) > since).order_by(col(AuditLog.id))
        )
        return list(rows.all())


def _outbound(h: Harness, before: Snapshot) -> list[tuple[str, str]]:
    """Every message sent or edited since the snapshot, as (recipient, text)."""
    out = [(f"tg:{c.chat_id}", c.text) for c in h.fake.calls[before.telegram_calls :] if c.text]
    out += [(f"sms:{m.to}", m.body) for m in h.twilio.messages[before.sms :]]
    return out


def _leaks(
    w: World, typed: str, outbound: list[tuple[str, str]], tokens: tuple[str, ...]
) -> list[str]:
    found = []
    for to, text in outbound:
        words = [t for t in tokens if t in text]
        # The reference is case data too, unless the actor typed it and sees it echoed.
        bare = text.replace(w.reference, "") if w.reference in typed else text
        if w.reference in bare or w.reference.replace("-", "") in bare:
            words.append("reference")
        if words:
            found.append(f"{to}: {words}")
    return found


def _actor_texts(h: Harness, a: Actor, before: Snapshot) -> list[str]:
    texts = [c.text for c in h.fake.calls[before.telegram_calls :] if c.chat_id == a.user.id]
    if a.phone is not None:
        texts += [m.body for m in h.twilio.messages[before.sms :] if m.to == a.phone]
    return [t for t in texts if t]


# What staff are told when a command is not theirs to run.
STAFF_REFUSALS = (
    staff_handlers.COORDINATORS_ONLY,
    relay.REFUSED,
    "No case {ref} among yours.",
)


TALLY: dict[str, int] = {
    "cells": 0,
    REFUSED: 0,
    ALLOWED: 0,
    SCOPED: 0,
    IGNORED: 0,
    "leaks": 0,
    "gaps": 0,
}


@pytest.fixture(scope="module", autouse=True)
def _summary() -> Iterator[None]:
    yield
    if TALLY["cells"]:
        say(
            f"access: {len(ROLES)} roles x {len(ACTIONS)} actions = {TALLY['cells']} cells "
            f"({len(ROLES) * len(ACTIONS) - len(_cells())} do not apply); "
            f"{TALLY[REFUSED]} refused and audited, "
            f"{TALLY['gaps']} refused but not audited, "
            f"{TALLY[ALLOWED] + TALLY[SCOPED]} allowed as expected "
            f"({TALLY[SCOPED]} of them scoped to the actor's own cases), "
            f"{TALLY[IGNORED]} answered as ordinary text, "
            f"{TALLY['leaks']} leaks"
        )


# --------------------------------------------------------------------------- the matrix


@pytest.mark.parametrize(("role", "action", "expected"), _cells())
async def test_access_cell(tg: Harness, role: str, action: str, expected: str) -> None:
    w = await _build(tg)
    actor = ROLES[role]
    before = await _snapshot(tg, w)
    typed = await ACTIONS[action](tg, w, actor)
    after = await _snapshot(tg, w)
    outbound = _outbound(tg, before)
    seen = _actor_texts(tg, actor, before)
    audits = await _new_audits(tg, before.audit_id)
    staff = w.staff[actor.staff] if actor.staff else None
    TALLY["cells"] += 1

    if expected == ALLOWED:
        await _check_allowed(tg, w, role, action, seen, audits, before, after, outbound, typed)
        TALLY[ALLOWED] += 1
        return

    # Refused, scoped or ignored: nothing of the victim's case reaches anyone or changes.
    leaks = _leaks(w, typed, outbound, CONTENT + CASE_DATA)
    TALLY["leaks"] += bool(leaks)
    assert not leaks, f"{role} {action}: case data went out: {leaks}"
    assert (after.status, after.assigned, after.appointments, after.victim_sms) == (
        before.status,
        before.assigned,
        before.appointments,
        before.victim_sms,
    ), f"{role} {action} changed the case or reached its client"
    if staff is not None:
        async with tg.services.sessions() as session:
            assert await session.get(StaffDialogue, staff.id) is None, "a wizard was opened"
    granted = [a for a in audits if a.allowed and a.case_id == w.case_id]
    assert not granted, f"{role} {action}: access to the case was granted: {granted!r}"
    assert seen, f"{role} {action}: no answer at all"

    if expected == IGNORED:
        TALLY[IGNORED] += 1
        return

    if expected == SCOPED:
        if role == "client":  # her own case's status, and only that
            assert any(w.own_reference in t for t in seen), seen
        TALLY[SCOPED] += 1
        return

    refusals = [a for a in audits if not a.allowed]
    if not refusals:
        TALLY["gaps"] += 1
        raise Unaudited(f"{role} {action}: refused but not audited (audit rows: {audits!r})")
    if staff is not None:
        assert {(a.actor_kind, a.actor_id) for a in refusals} == {("staff", staff.id)}
        shown = [r.format(ref=_ref(w, actor)) for r in STAFF_REFUSALS]
        assert seen and seen[-1] in shown, f"{role} {action}: told {seen!r}"
    else:
        # Recorded against the account that tried, never against the victim.
        assert all(a.actor_kind != "staff" for a in refusals), refusals
        assert all(a.client_id not in (None, w.victim_id) for a in refusals), refusals
    # A refusal names no case but the one the actor typed (or none).
    assert all(a.case_id in (None, w.case_id) for a in refusals)
    TALLY[REFUSED] += 1


async def _check_allowed(
    h: Harness,
    w: World,
    role: str,
    action: str,
    seen: list[str],
    audits: list[AuditLog],
    before: Snapshot,
    after: Snapshot,
    outbound: list[tuple[str, str]],
    typed: str,
) -> None:
    """The positive controls: what the assigned attorney and the coordinator are shown."""
    assert seen, f"{role} {action}: no answer"
    shown = "\n".join(seen)
    allowed_audits = {a.action for a in audits if a.allowed}
    assert not [a for a in audits if not a.allowed], audits
    if role == "assigned attorney":
        if action == "/cases":
            assert w.reference in shown
        elif action in ("/case", "/find"):
            assert "Client: Rosa Diaz" in shown and LOCKS in shown and PLACE in shown
            # The leak check would have caught this, had anyone else been shown it.
            assert _leaks(w, typed, outbound, CONTENT + CASE_DATA)
            assert "staff.read" in allowed_audits
        elif action in ("/reply", "card reply"):
            told = h.twilio.sent_to(VICTIM_PHONE)[before.victim_sms :]
            assert [m.body for m in told] == [f"Maria (Legal Aid Line): {NOTE}"]
            assert "relay.reply" in allowed_audits
        elif action == "/status":
            assert after.status == "Settled" and after.victim_sms == before.victim_sms + 1
            assert "case.status" in allowed_audits
        else:
            raise AssertionError(f"no check for {role} {action}")
        return
    assert role == "coordinator", role
    # Coordinators run the program; a client's words, name, number and whereabouts stay out.
    to_carla = [(to, text) for to, text in outbound if to == f"tg:{CARLA.id}"]
    leaks = _leaks(w, w.reference, to_carla, CONTENT)
    assert not leaks, f"{role} {action}: client content reached a coordinator: {leaks}"
    if action in ("/case", "/find"):
        assert f"Status: {STATUS_TEXT}" in shown and "Attorney: Maria" in shown
        assert "case.find" in allowed_audits
    elif action == "/status":
        assert after.status == "Settled" and after.victim_sms == before.victim_sms + 1
        assert "case.status" in allowed_audits
    elif action == "/assign":
        assert seen[-1] == f"Who should handle {w.reference}?"
    elif action == "assign button":
        assert after.assigned == w.staff["ben"].id
        assert seen[-1] == f"{w.reference} assigned to Ben Okafor."
        assert "case.assign" in allowed_audits
    elif action == "/appt":
        assert after.appointments == before.appointments + 1
        assert "appointment.add" in allowed_audits
    elif action == "/broadcast":
        assert "broadcast.wizard" in allowed_audits
        await h.send(h.updates.text(CARLA, "/cancel"))
    else:
        raise AssertionError(f"no check for {role} {action}")


# Actions that quote a reference, for the probe below.
REFERENCE_ACTIONS = ("/case", "/find", "/reply", "/status", "/assign", "/appt", "STATUS ref")


async def test_a_real_reference_is_answered_like_a_made_up_one(tg: Harness) -> None:
    """Refusals do not tell whether a case exists: the same words for its reference as for
    one no case has, to a stranger and to an attorney it is not assigned to."""
    w = await _build(tg)
    pairs = (
        (ROLES["stranger"], ROLES["stranger+ref"]),
        (Actor("ben guessing", BEN, None, "ben", knows_reference=False), ROLES[STAFF_ROLES[0]]),
    )
    compared = 0
    for guesser, knower in pairs:
        for action in REFERENCE_ACTIONS:
            answers = []
            for actor in (guesser, knower):
                before = await _snapshot(tg, w)
                await ACTIONS[action](tg, w, actor)
                seen = _actor_texts(tg, actor, before)
                answers.append([t.replace(_ref(w, actor), "REF") for t in seen])
            assert answers[0] == answers[1], (knower.role, action, answers)
            assert answers[0], (knower.role, action)
            compared += 1
    say(
        f"access: {compared} refusals compared for a real and a made-up reference, "
        "0 differ (existence of a case is not revealed)"
    )
