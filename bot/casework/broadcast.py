"""Broadcasts: one message to each client of a segment, in their language, through the outbox."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlmodel.ext.asyncio.session import AsyncSession

from bot import keywords, sms_text
from bot.casework import limits
from bot.core import NOTICE_CHANNELS, Reply
from bot.i18n import LANGUAGES, available_languages
from bot.outgoing import render_text
from storage import repo
from storage.models import (
    Broadcast,
    Channel,
    MessageStatus,
    OutboxStatus,
    Priority,
    ScheduledItem,
    ScheduleStatus,
)

if TYPE_CHECKING:
    from bot.services import Services

log = logging.getLogger(__name__)

KIND = "broadcast"
BATCH_SIZE = 1000
SEGMENT_KEYS = ("language", "category", "status", "attorney", "appointment-date")
_CATEGORY_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

# Why a selected client gets nothing. Kept short: they are stored in outbox.last_error.
SKIP_OPTED_OUT = "opted out"
SKIP_DISCREET = "discreet mode: text not marked safe"
SKIP_ERASED = "client erased"  # the dispatcher's words, so reports group them together
SKIP_NO_ADDRESS = "no address"

# Broadcast.status
DRAFT, SCHEDULED, SENDING, DONE, CANCELLED = (
    repo.BroadcastStatus.DRAFT,
    repo.BroadcastStatus.SCHEDULED,
    repo.BroadcastStatus.SENDING,
    repo.BroadcastStatus.DONE,
    repo.BroadcastStatus.CANCELLED,
)


class SegmentError(ValueError):
    """A segment expression that cannot be used; the message says why, in one line."""


class BroadcastError(Exception):
    """A broadcast that is refused as asked (missing texts, cancelled, unknown id)."""


def offered_languages() -> list[str]:
    """Languages a client can have and a broadcast can carry a text for, in menu order."""
    return list(dict.fromkeys([*LANGUAGES, *available_languages()]))


# --------------------------------------------------------------------------- segments


@dataclass(frozen=True)
class Segment:
    """Which clients a broadcast is for: everyone, or every term holding at once."""

    language: str | None = None
    category: str | None = None
    status: str | None = None
    attorney: int | None = None  # the attorney's Telegram id
    appointment_date: date | None = None

    @property
    def everyone(self) -> bool:
        return not self.terms()

    @property
    def case_terms(self) -> bool:
        """True when a client matches through one of their open cases."""
        return any(
            v is not None
            for v in (self.category, self.status, self.attorney, self.appointment_date)
        )

    def terms(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if self.language is not None:
            out.append(("language", self.language))
        if self.category is not None:
            out.append(("category", self.category))
        if self.status is not None:
            out.append(("status", self.status))
        if self.attorney is not None:
            out.append(("attorney", str(self.attorney)))
        if self.appointment_date is not None:
            out.append(("appointment-date", self.appointment_date.isoformat()))
        return out

    def expression(self) -> str:
        """The canonical expression, as stored and shown."""
        terms = self.terms()
        return ",".join(f"{k}={v}" for k, v in terms) if terms else "all"


def parse_segment(expr: str) -> Segment:
    """Parse ``all`` or ``key=value,...`` (all must hold); raise SegmentError on bad input."""
    text = " ".join(expr.split())
    if not text:
        raise SegmentError("the segment is empty: use 'all' or terms like language=es")
    if len(text) > limits.SEGMENT_MAX:
        raise SegmentError(f"the segment is longer than {limits.SEGMENT_MAX} characters")
    if text.lower() == "all":
        return Segment()
    values: dict[str, Any] = {}
    for raw in text.split(","):
        term = raw.strip()
        if not term:
            raise SegmentError(f"empty term in segment {text!r} (terms are joined by commas)")
        if term.lower() == "all":
            raise SegmentError("'all' cannot be combined with other terms")
        key, sep, value = term.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep:
            raise SegmentError(f"segment term {term!r} is not key=value")
        if key not in SEGMENT_KEYS:
            raise SegmentError(
                f"unknown segment key {key!r}: use one of {', '.join(SEGMENT_KEYS)}, or 'all'"
            )
        if key in values:
            raise SegmentError(f"segment key {key!r} given twice (every term must hold)")
        values[key] = _segment_value(key, value)
    return Segment(
        language=values.get("language"),
        category=values.get("category"),
        status=values.get("status"),
        attorney=values.get("attorney"),
        appointment_date=values.get("appointment-date"),
    )


def _segment_value(key: str, value: str) -> Any:
    if not value:
        raise SegmentError(f"segment key {key!r} has no value")
    if key == "language":
        lang = value.lower()
        if lang not in offered_languages():
            raise SegmentError(
                f"language={value}: not an offered language ({', '.join(offered_languages())})"
            )
        return lang
    if key == "category":
        category = value.lower()
        if not _CATEGORY_RE.match(category):
            raise SegmentError(f"category={value}: not a category word like housing or family")
        return category
    if key == "status":
        if len(value) > limits.STATUS_MAX:
            raise SegmentError(f"status= is longer than {limits.STATUS_MAX} characters")
        return value
    if key == "attorney":
        if not value.isdigit() or int(value) <= 0:
            raise SegmentError(f"attorney={value}: expected the attorney's numeric Telegram id")
        return int(value)
    # appointment-date
    if not _DATE_RE.match(value):
        raise SegmentError(f"appointment-date={value}: expected YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise SegmentError(f"appointment-date={value}: not a real date") from None


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class Recipient:
    """A client who will get the broadcast: where, and in which language's text."""

    client_id: int
    language: str  # the client's own language
    text_language: str  # the text they get (their language, or the fallback)
    channel: str
    identity_id: int
    notice: bool = False  # first message on SMS: the dispatcher appends the opt-out notice


@dataclass(frozen=True)
class Skip:
    """A selected client who gets nothing, and why."""

    client_id: int
    reason: str
    language: str
    channel: str
    identity_id: int | None


@dataclass(frozen=True)
class TextCost:
    """What one language's text costs as SMS."""

    language: str
    encoding: str
    units: int
    segments: int
    sms_recipients: int
    total_segments: int  # counts the longer first-contact copies exactly
    with_notice: int  # recipients whose copy carries the opt-out notice


@dataclass
class Plan:
    """Who gets what, checked before anything is written: the dry run is this, printed."""

    segment: Segment
    texts: dict[str, str]
    fallback_language: str | None
    discreet_safe: bool
    recipients: list[Recipient]
    skipped: list[Skip]
    missing_languages: dict[str, int]  # client language -> recipients with no text in it
    segment_cost: float
    broadcast_id: int | None = None

    @property
    def refused(self) -> str | None:
        """Why this plan may not be sent, or None when it may."""
        if self.missing_languages and self.fallback_language is None:
            langs = ", ".join(f"{k} ({n})" for k, n in sorted(self.missing_languages.items()))
            return f"no text for {langs}: add those texts or choose a fallback language"
        return None

    def by_language_channel(self) -> dict[tuple[str, str], int]:
        """Recipients per (client language, channel)."""
        return dict(Counter((r.language, r.channel) for r in self.recipients))

    def skipped_by_reason(self) -> dict[str, int]:
        return dict(Counter(s.reason for s in self.skipped))

    def costs(self) -> list[TextCost]:
        """Segments and SMS recipients of each text, counting the opt-out notice on first SMS."""
        # (text language, client language, notice?) -> recipients
        groups = Counter(
            (r.text_language, r.language, r.notice)
            for r in self.recipients
            if r.channel == Channel.SMS
        )
        out = []
        for lang, text in self.texts.items():
            body = render_text(Reply(text=text), Channel.SMS, lang)
            info = sms_text.analyze(body)
            total = notices = sms = 0
            for (text_lang, client_lang, notice), n in groups.items():
                if text_lang != lang:
                    continue
                sms += n
                copy = with_notice(body, client_lang) if notice else body
                total += n * (sms_text.segment_count(copy) if notice else info.segments)
                notices += n if notice else 0
            out.append(
                TextCost(lang, info.encoding, info.units, info.segments, sms, total, notices)
            )
        return out

    @property
    def total_segments(self) -> int:
        return sum(c.total_segments for c in self.costs())

    @property
    def estimated_cost(self) -> float:
        return self.total_segments * self.segment_cost


def clean_texts(texts: dict[str, str]) -> dict[str, str]:
    """Texts keyed by offered language, trimmed; BroadcastError for empty, too long or unknown."""
    offered = offered_languages()
    out: dict[str, str] = {}
    for lang, raw in texts.items():
        code = lang.strip().lower()
        if code not in offered:
            raise BroadcastError(
                f"a text in {lang!r}: not an offered language ({', '.join(offered)})"
            )
        text = raw.strip()
        if not text:
            raise BroadcastError(f"the {code} text is empty")
        if sms_text.units(text, "UCS-2") > sms_text.MAX_BODY:
            raise BroadcastError(
                f"the {code} text is longer than {sms_text.MAX_BODY} characters (one SMS body)"
            )
        out[code] = text
    if not out:
        raise BroadcastError("a broadcast needs at least one text")
    return out


async def _case_client_ids(
    session: AsyncSession, services: Services, seg: Segment
) -> set[int] | None:
    """Clients with an open case matching every case term; None when there are none."""
    if not seg.case_terms:
        return None
    staff_id: int | None = None
    if seg.attorney is not None:
        staff = await repo.find_staff_by_telegram_id(
            session, vault=services.vault, telegram_id=seg.attorney
        )
        if staff is None:
            raise SegmentError(f"attorney={seg.attorney}: no active staff with that Telegram id")
        staff_id = staff.id
    if seg.appointment_date is None:
        return await repo.clients_with_open_case(
            session, category=seg.category, status=seg.status, staff_id=staff_id
        )
    # The date is the client's local date: look at a UTC window wide enough for every zone
    # (UTC-12 to UTC+14) and keep the appointments whose local date is the one asked.
    day = seg.appointment_date
    lo = datetime.combine(day, time(0), tzinfo=UTC) - timedelta(hours=14)
    hi = datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC) + timedelta(hours=12)
    out: set[int] = set()
    appointments = await repo.open_case_appointments_between(
        session, start=lo, end=hi, category=seg.category, status=seg.status, staff_id=staff_id
    )
    for client_id, starts_at, tz in appointments:
        if starts_at.astimezone(_zone(tz, services)).date() == day:
            out.add(client_id)
    return out


def _zone(tz: str, services: Services) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(services.settings.default_timezone)


@dataclass(frozen=True)
class _Ident:
    id: int
    channel: str
    opted_out: bool
    last_inbound_at: datetime | None
    created_at: datetime
    notice_sent: bool


@dataclass
class _Candidate:
    client_id: int
    language: str
    erased: bool
    discreet: bool
    identities: list[_Ident] = field(default_factory=list)


async def _candidates(session: AsyncSession, services: Services, seg: Segment) -> list[_Candidate]:
    """Every client the segment selects, once each, with their identities."""
    by_case = await _case_client_ids(session, services, seg)
    default = services.settings.default_language
    rows = await repo.segment_clients(
        session,
        language=seg.language,
        unset_language_matches=seg.language == default,
        client_ids=by_case,
    )
    found = {c.id: _Candidate(c.id, c.language or default, c.erased, c.discreet) for c in rows}
    if not found:
        return []
    ids = sorted(found)
    # A discreet case makes its client discreet for broadcasts, whatever the segment.
    for cid in await repo.clients_with_discreet_open_case(session, client_ids=ids):
        found[cid].discreet = True
    for i in await repo.identities_of_clients(session, client_ids=ids):
        assert i.id is not None
        found[i.client_id].identities.append(
            _Ident(
                i.id,
                i.channel,
                i.opted_out_at is not None,
                i.last_inbound_at,
                i.created_at,
                i.notice_sent_at is not None,
            )
        )
    return [found[cid] for cid in ids]


def _reply_identity(idents: list[_Ident]) -> _Ident | None:
    """Where the client last wrote from, chosen as repo.reply_identity chooses."""
    if not idents:
        return None
    epoch = datetime.min.replace(tzinfo=UTC)
    return max(idents, key=lambda i: (i.last_inbound_at or epoch, i.created_at, i.id))


def _skip_reason(cand: _Candidate, where: _Ident | None, discreet_safe: bool) -> str | None:
    if cand.erased:
        return SKIP_ERASED
    if where is None:
        return SKIP_NO_ADDRESS
    if any(i.opted_out for i in cand.identities):
        return SKIP_OPTED_OUT
    if cand.discreet and not discreet_safe:
        return SKIP_DISCREET
    return None


@dataclass(frozen=True)
class Audience:
    """Who a segment reaches before any text is written (a wizard's first answer)."""

    languages: dict[str, int]  # reachable clients per language, discreet ones included
    discreet: int  # of those, how many are in discreet mode
    skipped: dict[str, int]  # opted out, erased, no address

    @property
    def total(self) -> int:
        return sum(self.languages.values())

    def ordered_languages(self) -> list[str]:
        return sorted(self.languages, key=_menu_order)


async def audience(session: AsyncSession, services: Services, segment: str | Segment) -> Audience:
    """Count a segment's reachable clients per language, and its discreet-mode clients."""
    seg = parse_segment(segment) if isinstance(segment, str) else segment
    languages: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    discreet = 0
    for cand in await _candidates(session, services, seg):
        reason = _skip_reason(cand, _reply_identity(cand.identities), discreet_safe=True)
        if reason is not None:
            skipped[reason] += 1
            continue
        languages[cand.language] += 1
        discreet += cand.discreet
    return Audience(dict(languages), discreet, dict(skipped))


async def plan(
    session: AsyncSession,
    services: Services,
    segment: str | Segment,
    texts: dict[str, str],
    fallback_language: str | None = None,
    discreet_safe: bool = False,
) -> Plan:
    """Work out who gets which text, who is skipped and why, and what it costs. Writes nothing.

    A client who opted out on any channel gets nothing: a broadcast is bulk news, and a STOP
    is the clearest thing a client can tell us. Erased clients are left out; clients in
    discreet mode get the text only when it is marked safe for them.
    """
    seg = parse_segment(segment) if isinstance(segment, str) else segment
    clean = clean_texts(texts)
    fallback = fallback_language.strip().lower() if fallback_language else None
    if fallback is not None and fallback not in clean:
        raise BroadcastError(f"the fallback language {fallback} has no text")
    recipients: list[Recipient] = []
    skipped: list[Skip] = []
    missing: Counter[str] = Counter()
    for cand in await _candidates(session, services, seg):
        where = _reply_identity(cand.identities)
        channel = where.channel if where else "none"
        identity_id = where.id if where else None
        reason = _skip_reason(cand, where, discreet_safe)
        if reason is not None:
            skipped.append(Skip(cand.client_id, reason, cand.language, channel, identity_id))
            continue
        assert where is not None
        text_language = cand.language
        if text_language not in clean:
            missing[cand.language] += 1
            text_language = fallback or cand.language
        notice = channel in NOTICE_CHANNELS and not where.notice_sent
        recipients.append(
            Recipient(cand.client_id, cand.language, text_language, channel, where.id, notice)
        )
    return Plan(
        segment=seg,
        texts=clean,
        fallback_language=fallback,
        discreet_safe=discreet_safe,
        recipients=recipients,
        skipped=skipped,
        missing_languages=dict(missing),
        segment_cost=services.settings.sms_segment_cost,
    )


def describe(plan: Plan, *, currency: str = "$") -> list[str]:
    """The dry run, as lines a coordinator reads before sending (no client data in it)."""
    total = len(plan.recipients)
    lines = [f"Segment: {plan.segment.expression()}"]
    channels = Counter(r.channel for r in plan.recipients)
    per_channel = ", ".join(f"{ch} {n}" for ch, n in sorted(channels.items()))
    lines.append(f"Recipients: {total}" + (f" ({per_channel})" if per_channel else ""))
    by_lang: dict[str, Counter[str]] = {}
    text_of: dict[str, str] = {}
    for r in plan.recipients:
        by_lang.setdefault(r.language, Counter())[r.channel] += 1
        text_of[r.language] = r.text_language
    for lang in sorted(by_lang, key=_menu_order):
        counts = by_lang[lang]
        parts = ", ".join(f"{ch} {n}" for ch, n in sorted(counts.items()))
        note = "" if text_of[lang] == lang else f" - no {lang} text, gets the {text_of[lang]} text"
        lines.append(f"  {lang}: {sum(counts.values())} ({parts}){note}")
    if plan.missing_languages:
        langs = ", ".join(f"{k} ({n})" for k, n in sorted(plan.missing_languages.items()))
        if plan.fallback_language is None:
            lines.append(f"Missing texts: {langs} - refused unless a fallback language is chosen")
        else:
            lines.append(f"Missing texts: {langs} - they get the {plan.fallback_language} text")
    else:
        lines.append("Missing texts: none")
    unused = [lang for lang in plan.texts if lang not in {r.text_language for r in plan.recipients}]
    if unused:
        lines.append(f"Texts nobody gets: {', '.join(unused)}")
    skipped = plan.skipped_by_reason()
    if skipped:
        lines.append("Skipped: " + ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())))
    lines.append("SMS cost:")
    for c in plan.costs():
        many = "" if c.segments == 1 else "s"
        warn = " (over 3 segments: consider shortening)" if c.segments > 3 else ""
        first = f"; {c.with_notice} first copies add the opt-out notice" if c.with_notice else ""
        lines.append(
            f"  {c.language}: {c.segments} segment{many} ({c.encoding}, {c.units} units)"
            f" x {c.sms_recipients} = {c.total_segments}{first}{warn}"
        )
    lines.append(
        f"  total: {plan.total_segments} segments, about {currency}{plan.estimated_cost:.2f}"
        f" at {currency}{plan.segment_cost:g} a segment"
    )
    lines.append("Preview:")
    for lang, text in plan.texts.items():
        lines.append(f"  [{lang}] " + text.replace("\n", "\n       "))
    return lines


def with_notice(text: str, client_language: str) -> str:
    """A first message as the dispatcher sends it: the text, then how to opt out."""
    return f"{text}\n\n{keywords.text(client_language, 'notice')}"


def _menu_order(lang: str) -> tuple[int, str]:
    order = list(LANGUAGES)
    return (order.index(lang) if lang in order else len(order), lang)


# --------------------------------------------------------------------------- sending


ProgressHook = Callable[[int, int], Awaitable[None] | None]


def dedupe_key(broadcast_id: int, client_id: int) -> str:
    """The outbox key that makes a client's copy of a broadcast happen once."""
    return f"{KIND}:{broadcast_id}:{client_id}"


def schedule_key(broadcast_id: int) -> str:
    return repo.broadcast_schedule_key(broadcast_id)


async def get(session: AsyncSession, broadcast_id: int) -> Broadcast:
    row = await repo.get_broadcast(session, broadcast_id=broadcast_id)
    if row is None:
        raise BroadcastError(f"no broadcast {broadcast_id}")
    return row


async def enqueue(
    session: AsyncSession,
    services: Services,
    plan: Plan,
    at: datetime | None = None,
    *,
    staff_id: int | None = None,
    commit_batches: bool = False,
    progress: ProgressHook | None = None,
) -> Broadcast:
    """Record the broadcast and queue one outbox row per recipient (or schedule it for ``at``).

    Rows go in batches through ``repo.enqueue_many``; each row's dedupe key names the
    broadcast and the client, so running this again for the same broadcast (a retry, a
    resume after a crash) adds only what is missing. ``commit_batches`` commits after each
    batch so a big send holds no long write lock and a crash keeps whole batches. Quiet hours
    and the send rate are the dispatcher's: rows are due now and never urgent.
    """
    if plan.refused:
        raise BroadcastError(plan.refused)
    now = services.clock()
    if plan.broadcast_id is not None:
        row = await get(session, plan.broadcast_id)
        if row.status == CANCELLED:
            raise BroadcastError(f"broadcast {row.id} was cancelled")
    else:
        row = await repo.create_broadcast(
            session,
            segment=plan.segment.expression(),
            texts=plan.texts,
            fallback_language=plan.fallback_language,
            discreet_safe=plan.discreet_safe,
            staff_id=staff_id,
            now=now,
        )
        assert row.id is not None
        plan.broadcast_id = row.id
    assert row.id is not None
    if at is not None and at > now:
        await repo.schedule_broadcast(session, broadcast=row, at=at, now=now)
        if commit_batches:
            await session.commit()
        log.info("broadcast %s scheduled", row.id)
        return row
    await repo.start_sending_broadcast(session, broadcast=row, recipients=len(plan.recipients))
    if commit_batches:
        await session.commit()
    broadcast_id = row.id
    # Skipped clients get a row too (no body): the report says why, and a re-run leaves them be.
    todo: list[tuple[int, Recipient | Skip]] = sorted(
        [(r.client_id, r) for r in plan.recipients] + [(s.client_id, s) for s in plan.skipped],
        key=lambda pair: pair[0],
    )
    total, written = len(todo), 0
    for start in range(0, total, BATCH_SIZE):
        batch = todo[start : start + BATCH_SIZE]
        clients = await repo.clients_by_id(session, ids=[cid for cid, _ in batch])
        messages = []
        for client_id, who in batch:
            text = reason = None
            if isinstance(who, Recipient):
                lang = who.text_language
                text = render_text(Reply(text=plan.texts[lang]), who.channel, lang)
            else:
                reason = who.reason
            messages.append(
                repo.BulkMessage(
                    client=clients[client_id],
                    channel=who.channel,
                    identity_id=who.identity_id,
                    dedupe_key=dedupe_key(broadcast_id, client_id),
                    text=text,
                    reason=reason,
                )
            )
        written += await repo.enqueue_many(
            session,
            vault=services.vault,
            messages=messages,
            kind=KIND,
            priority=Priority.BROADCAST,
            due_at=now,
            broadcast_id=broadcast_id,
            now=now,
        )
        if commit_batches:
            await session.commit()
        if progress is not None:
            maybe = progress(start + len(batch), total)
            if maybe is not None:
                await maybe
    log.info("broadcast %s: %d outbox rows written for %d clients", broadcast_id, written, total)
    return row


async def send(
    services: Services,
    plan: Plan,
    *,
    at: datetime | None = None,
    staff_id: int | None = None,
    progress: ProgressHook | None = None,
) -> Broadcast:
    """Enqueue (or schedule) in a session of its own, committed batch by batch, and audit it.

    What the CLI and the Telegram wizard call once the coordinator has confirmed.
    """
    async with services.sessions() as session:
        row = await enqueue(
            session,
            services,
            plan,
            at,
            staff_id=staff_id,
            commit_batches=True,
            progress=progress,
        )
        await repo.audit(
            session,
            actor_kind="staff" if staff_id is not None else "cli",
            actor_id=staff_id,
            action="broadcast.schedule" if row.status == SCHEDULED else "broadcast.send",
            detail=f"broadcast {row.id}: {len(plan.recipients)} recipients",
        )
        await session.commit()
    return row


async def replan(session: AsyncSession, services: Services, broadcast_id: int) -> Plan:
    """The plan of a stored broadcast, worked out again now (who opted out since, and so on)."""
    row = await get(session, broadcast_id)
    p = await plan(
        session,
        services,
        row.segment,
        dict(row.texts),
        fallback_language=row.fallback_language,
        discreet_safe=row.discreet_safe,
    )
    p.broadcast_id = row.id
    return p


async def resume(
    session: AsyncSession,
    services: Services,
    broadcast_id: int,
    *,
    commit_batches: bool = False,
    progress: ProgressHook | None = None,
) -> Broadcast:
    """Queue whatever a broadcast still lacks (after a crash, or when its time comes)."""
    row = await get(session, broadcast_id)
    if row.status == CANCELLED:
        raise BroadcastError(f"broadcast {broadcast_id} was cancelled")
    p = await replan(session, services, broadcast_id)
    return await enqueue(session, services, p, commit_batches=commit_batches, progress=progress)


async def run_scheduled(
    session: AsyncSession, services: Services, item: ScheduledItem
) -> str | None:
    """Queues a scheduled broadcast when its time comes (the scheduler's "broadcast" handler).

    Runs in the scheduler's transaction, which marks the item done with the rows it writes.
    """
    row = (
        await repo.get_broadcast(session, broadcast_id=item.broadcast_id)
        if item.broadcast_id
        else None
    )
    if row is None:
        log.error("scheduled item %s names no broadcast", item.id)
        return ScheduleStatus.SKIPPED
    if row.status == CANCELLED:
        return ScheduleStatus.CANCELLED
    assert row.id is not None
    try:
        await resume(session, services, row.id)
    except (BroadcastError, SegmentError) as exc:
        # Complete when scheduled; an attorney removed since (say) makes it fail now.
        log.error("scheduled broadcast %s not sent: %s", row.id, exc)
        return ScheduleStatus.SKIPPED
    return None


async def cancel(session: AsyncSession, services: Services, broadcast_id: int) -> int:
    """Stop a broadcast: its pending rows are cancelled; what was sent stays sent. Returns count.

    One UPDATE guarded by ``status = pending``: a row a dispatcher has already claimed is not
    touched (it is on its way), and a cancelled row is never claimed.
    """
    row = await get(session, broadcast_id)
    return await repo.cancel_broadcast(session, broadcast=row, now=services.clock())


# --------------------------------------------------------------------------- reports


@dataclass
class Report:
    """Where a broadcast stands: every selected client is in exactly one of these counts."""

    broadcast_id: int
    status: str
    segment: str
    scheduled_at: datetime | None
    sent: int = 0  # handed to the provider (delivered ones included)
    delivered: int = 0
    failed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    cancelled: int = 0
    review: int = 0  # outcome unknown after a crash: a person decides
    pending: int = 0

    @property
    def total(self) -> int:
        return (
            self.sent
            + self.failed
            + sum(self.skipped.values())
            + self.cancelled
            + self.review
            + self.pending
        )

    @property
    def finished(self) -> int:
        return self.total - self.pending

    @property
    def done(self) -> bool:
        return self.status in (DONE, CANCELLED) or (self.status == SENDING and not self.pending)

    def lines(self) -> list[str]:
        skipped = sum(self.skipped.values())
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        out = [f"Broadcast {self.broadcast_id} ({self.segment}): {self.status}"]
        if self.scheduled_at is not None and self.status == SCHEDULED:
            out.append(f"  scheduled for {self.scheduled_at.isoformat()}")
        out += [
            f"  sent:      {self.sent} ({self.delivered} delivered)",
            f"  failed:    {self.failed}",
            f"  skipped:   {skipped}" + (f" ({why})" if why else ""),
            f"  cancelled: {self.cancelled}",
            f"  pending:   {self.pending}",
        ]
        if self.review:
            out.append(f"  to review: {self.review} (outcome unknown; not re-sent)")
        return out


_FAILED_MESSAGES = (MessageStatus.FAILED, MessageStatus.UNDELIVERED)


async def report(session: AsyncSession, services: Services, broadcast_id: int) -> Report:
    """Count a broadcast's rows by outcome; a sending broadcast with nothing left is closed."""
    row = await get(session, broadcast_id)
    assert row.id is not None
    rep = Report(row.id, row.status, row.segment, row.scheduled_at)
    skipped: Counter[str] = Counter()
    counts = await repo.broadcast_outcome_counts(session, broadcast_id=broadcast_id)
    for status, error, msg_status, n in counts:
        if status in (OutboxStatus.PENDING, OutboxStatus.SENDING):
            rep.pending += n
        elif status == OutboxStatus.SENT:
            if msg_status in _FAILED_MESSAGES:
                rep.failed += n
            else:
                rep.sent += n
                if msg_status == MessageStatus.DELIVERED:
                    rep.delivered += n
        elif status == OutboxStatus.FAILED:
            rep.failed += n
        elif status == OutboxStatus.SKIPPED:
            skipped[error or "skipped"] += n
        elif status == OutboxStatus.CANCELLED:
            rep.cancelled += n
        else:
            rep.review += n
    rep.skipped = dict(skipped)
    if row.status == SENDING and rep.pending == 0:
        await repo.finish_broadcast(session, broadcast=row, now=services.clock())
        rep.status = DONE
    return rep


def progress_text(rep: Report, width: int = 20) -> str:
    """One line for a message updated in place (Telegram) or a terminal: bar, share, counts."""
    total = rep.total
    share = rep.finished / total if total else 1.0
    filled = round(share * width)
    bar = "█" * filled + "░" * (width - filled)
    skipped = sum(rep.skipped.values())
    return (
        f"Broadcast {rep.broadcast_id}: {bar} {share:.0%} - {rep.sent} sent, "
        f"{rep.failed} failed, {skipped} skipped, {rep.pending} pending"
    )
