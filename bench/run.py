"""`make bench`: probono-bot against its limits, each figure next to a baseline of the same run.

Writes bench/RESULTS.md and ends with one line:
``bench: webhook_ratio=R broadcast_rate_ratio=R sweep_ms=N rss_mb=N``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import insert, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.casework import broadcast  # noqa: E402
from bot.channels.twilio import TwilioSender  # noqa: E402
from bot.dispatch import Dispatcher  # noqa: E402
from bot.scheduler import BATCH, LEASE  # noqa: E402
from bot.services import Services  # noqa: E402
from storage import migrate, repo  # noqa: E402
from storage.db import create_engine, transaction  # noqa: E402
from storage.models import (  # noqa: E402
    Appointment,
    Channel,
    ScheduledItem,
    ScheduleKind,
    ScheduleStatus,
)
from tests.conftest import make_settings  # noqa: E402
from tests.fakes.fake_twilio import (  # noqa: E402
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    FakeTwilio,
    form_body,
    inbound_params,
    sign,
)
from tests.serve_proc import free_port, healthy, serve, serve_env, stop  # noqa: E402

CONCURRENCY = 16
RUN_SECONDS = 4.0
ROUNDS = 3
PHONES = 2000
BROADCAST_RECIPIENTS = 10_000
# Before group commit the PostgreSQL drain ran at ~16 msg/s and 10,000 took over 10 minutes;
# BENCH_PG_BROADCAST can still shrink it when time is short.
PG_BROADCAST_RECIPIENTS = int(os.environ.get("BENCH_PG_BROADCAST", str(BROADCAST_RECIPIENTS)))
SEND_RATE = 200
APPOINTMENTS = 100_000
DUE_NOW = 300  # reminders due at the tick; the other 299,700 are in the future
SWEEP_REPEATS = 9
LANGS = ["en", "es", "ht", "zh", "vi", "ar"]
TEXTS = {lang: f"The clinic is closed Monday ({lang}). Your case is unchanged." for lang in LANGS}


_COUNTER = iter(range(10**9))  # one sequence for the whole run: every text is new


@dataclass
class LoadRun:
    count: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def rps(self) -> float:
        return self.count / self.seconds


@dataclass
class Figures:
    backend: str
    webhook_full_rps: list[float] = field(default_factory=list)
    webhook_bare_rps: list[float] = field(default_factory=list)
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    webhook_errors: int = 0
    rss_mb: float = 0.0
    broadcast_rate: float | None = None
    broadcast_sent: int = 0
    broadcast_duplicates: int = 0
    broadcast_plan_s: float = 0.0
    broadcast_enqueue_s: float = 0.0
    sweep_ms: list[float] = field(default_factory=list)
    sweep_claimed: int = 0
    texts_stored: int = 0
    answered_after_s: float | None = None
    pair_rps: list[float] = field(default_factory=list)
    pair_bare_rps: list[float] = field(default_factory=list)

    @property
    def webhook_ratio(self) -> float:
        return statistics.median(self.webhook_full_rps) / statistics.median(self.webhook_bare_rps)


class FakeInThread:
    """The fake Twilio on its own event loop, so it does not steal the load generator's loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fake: FakeTwilio = self._call(self._start())

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    async def _start(self) -> FakeTwilio:
        fake = FakeTwilio()
        await fake.start()
        return fake

    def close(self) -> None:
        self._call(self.fake.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def load(base: str | list[str], seconds: float) -> LoadRun:
    """CONCURRENCY workers post signed, distinct inbound texts for ``seconds``.

    With several bases (servers sharing one database), workers take turns among them.
    """
    bases = [base] if isinstance(base, str) else base
    run = LoadRun(0, seconds)
    stop_at = time.monotonic() + seconds
    counter = _COUNTER
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker(n: int) -> None:
            url = bases[n % len(bases)] + "/twilio/sms"
            while time.monotonic() < stop_at:
                i = next(counter)
                params = inbound_params(from_=f"+1555{i % PHONES:07d}", body=f"hello {i}")
                headers = {
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Twilio-Signature": sign(url, params),
                }
                started = time.perf_counter()
                try:
                    async with http.post(url, data=form_body(params), headers=headers) as resp:
                        await resp.read()
                        ok = resp.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    run.count += 1
                    run.latencies.append(time.perf_counter() - started)
                else:
                    run.errors += 1

        t0 = time.monotonic()
        await asyncio.gather(*(worker(n) for n in range(CONCURRENCY)))
        run.seconds = time.monotonic() - t0
    return run


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _start_bare(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, str(REPO / "bench" / "bare_server.py"), str(port)],
            env=dict(env, PYTHONPATH=str(REPO)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def bench_webhook(fig: Figures, database_url: str, work: Path) -> None:
    fake = FakeInThread()
    port, bare_port = free_port(), free_port()
    env = serve_env(database_url, work / "data", fake.fake.base_url, port)
    proc = serve(env, port, work / "serve.log")
    bare = _start_bare(bare_port, env, work / "bare.log")
    full, base_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{bare_port}"
    latencies: list[float] = []
    try:
        async with aiohttp.ClientSession() as http:
            await healthy(http, full, proc)
            await healthy(http, base_url, bare)
        await load(full, 1.0)  # warm up both: first clients, caches, connections
        await load(base_url, 1.0)
        for _ in range(ROUNDS):
            b = await load(base_url, RUN_SECONDS)
            f = await load(full, RUN_SECONDS)
            fig.webhook_bare_rps.append(b.rps)
            fig.webhook_full_rps.append(f.rps)
            fig.webhook_errors += f.errors + b.errors
            latencies.extend(f.latencies)
        # Acknowledged is stored, not yet answered: time the backlog of intake replies.
        fig.texts_stored, fig.answered_after_s = await _answered(database_url, limit_s=600)
        fig.rss_mb = rss_mb(proc.pid)
    finally:
        stop(proc)
        stop(bare)
        fake.close()
    latencies.sort()
    fig.p50_ms = latencies[len(latencies) // 2] * 1000
    fig.p99_ms = latencies[int(len(latencies) * 0.99)] * 1000


async def _answered(database_url: str, *, limit_s: float) -> tuple[int, float | None]:
    """Wait until every stored text is processed; (texts stored, seconds or None on timeout)."""
    engine = create_engine(database_url)
    started = time.perf_counter()
    try:
        while True:
            async with engine.connect() as conn:
                total, waiting = (
                    await conn.execute(
                        text(
                            "SELECT count(*), sum(CASE WHEN status = 'received' THEN 1 ELSE 0 END)"
                            " FROM message WHERE direction = 'in'"
                        )
                    )
                ).one()
            if not waiting:
                return int(total), time.perf_counter() - started
            if time.perf_counter() - started > limit_s:
                return int(total), None
            await asyncio.sleep(0.2)
    finally:
        await engine.dispose()


async def bench_webhook_pair(fig: Figures, database_url: str, work: Path) -> None:
    """Two `probono serve` processes on one PostgreSQL database, the load split between them."""
    fake = FakeInThread()
    ports = [free_port(), free_port()]
    bare_port = free_port()
    procs = []
    bare = None
    try:
        for i, port in enumerate(ports):
            env = serve_env(database_url, work / f"data{i}", fake.fake.base_url, port)
            procs.append(serve(env, port, work / f"serve{i}.log"))
        bare = _start_bare(bare_port, env, work / "bare.log")
        bases = [f"http://127.0.0.1:{p}" for p in ports]
        bare_base = f"http://127.0.0.1:{bare_port}"
        async with aiohttp.ClientSession() as http:
            for base, proc in zip(bases, procs, strict=True):
                await healthy(http, base, proc)
            await healthy(http, bare_base, bare)
        await load(bases, 1.0)
        for _ in range(ROUNDS):
            fig.pair_bare_rps.append((await load(bare_base, RUN_SECONDS)).rps)
            fig.pair_rps.append((await load(bases, RUN_SECONDS)).rps)
    finally:
        for proc in procs:
            stop(proc)
        if bare is not None:
            stop(bare)
        fake.close()


async def bench_broadcast(
    fig: Figures, database_url: str, work: Path, recipients: int = BROADCAST_RECIPIENTS
) -> None:
    fake = FakeTwilio()
    await fake.start()
    settings = make_settings(
        database_url,
        work / "bdata",
        SMS_SEND_RATE=SEND_RATE,
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_FROM_NUMBER=FROM_NUMBER,
        TWILIO_API_BASE_URL=fake.base_url,
    )
    services = Services.build(settings)
    sender = TwilioSender.from_settings(settings)
    assert sender is not None
    services.senders[Channel.SMS] = sender
    try:
        for start in range(0, recipients, 1000):
            async with transaction(services.sessions) as session:
                for i in range(start, min(start + 1000, recipients)):
                    await repo.create_client(
                        session,
                        vault=services.vault,
                        channel=Channel.SMS,
                        address=f"+1202{i:07d}",
                        language=LANGS[i % len(LANGS)],
                    )
        t0 = time.perf_counter()
        async with services.sessions() as session:
            plan = await broadcast.plan(session, services, "all", TEXTS)
        t1 = time.perf_counter()
        await broadcast.send(services, plan)
        t2 = time.perf_counter()
        fig.broadcast_plan_s, fig.broadcast_enqueue_s = t1 - t0, t2 - t1
        # The production path: the background dispatcher, as `probono serve` runs it.
        dispatcher = Dispatcher(services)
        t3 = time.perf_counter()
        await dispatcher.start()
        deadline = t3 + max(120.0, 4 * recipients / SEND_RATE)
        while len(fake.messages) < recipients and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)  # polling the fake's list is the measurement
        elapsed = time.perf_counter() - t3
        await dispatcher.stop()
        fig.broadcast_sent = len(fake.messages)
        per_phone = Counter(m.to for m in fake.messages)
        fig.broadcast_duplicates = sum(n - 1 for n in per_phone.values() if n > 1)
        fig.broadcast_rate = len(per_phone) / elapsed
    finally:
        await services.close()
        await fake.close()


async def bench_sweep(fig: Figures, database_url: str, work: Path) -> None:
    """100,000 appointments, three reminders each; time claiming the due ones, rolled back."""
    settings = make_settings(database_url, work / "sdata")
    services = Services.build(settings)
    now = datetime.now(UTC)
    try:
        case_ids: list[int] = []
        client_ids: list[int] = []
        async with transaction(services.sessions) as session:
            for i in range(1000):
                client = await repo.create_client(
                    session, vault=services.vault, channel=Channel.SMS, address=f"+1303{i:07d}"
                )
                case = await repo.create_case(session, client=client, category="housing")
                assert client.id is not None and case.id is not None
                client_ids.append(client.id)
                case_ids.append(case.id)
        engine = create_engine(database_url)
        try:
            chunk = 10_000
            async with engine.begin() as conn:
                for start in range(0, APPOINTMENTS, chunk):
                    await conn.execute(
                        insert(Appointment),
                        [
                            {
                                "id": a + 1,
                                "case_id": case_ids[a % 1000],
                                "kind": "hearing",
                                "starts_at": now + timedelta(days=3, minutes=a),
                                "timezone": "America/New_York",
                                "status": "scheduled",
                                "created_at": now,
                                "updated_at": now,
                            }
                            for a in range(start, start + chunk)
                        ],
                    )
                rows_per_insert = chunk
                for start in range(0, APPOINTMENTS * 3, rows_per_insert):
                    rows = []
                    for r in range(start, start + rows_per_insert):
                        a, n = divmod(r, 3)
                        due = (
                            now - timedelta(minutes=1)
                            if r < DUE_NOW
                            else now + timedelta(hours=1 + r % 5000)
                        )
                        rows.append(
                            {
                                "kind": ScheduleKind.REMINDER.value,
                                "unique_key": f"reminder:{a + 1}:{n}",
                                "due_at": due,
                                "status": ScheduleStatus.PENDING.value,
                                "client_id": client_ids[a % 1000],
                                "case_id": case_ids[a % 1000],
                                "appointment_id": a + 1,
                                "created_at": now,
                            }
                        )
                    await conn.execute(insert(ScheduledItem), rows)
            if engine.dialect.name == "postgresql":
                async with engine.connect() as conn:
                    await conn.execute(text("ANALYZE"))
            else:
                async with engine.begin() as conn:
                    await conn.execute(text("ANALYZE"))
        finally:
            await engine.dispose()
        kinds = [k.value for k in ScheduleKind]
        for _ in range(SWEEP_REPEATS):
            async with services.sessions() as session:
                t0 = time.perf_counter()
                claimed: list[int] = []
                while True:
                    ids = await repo.claim_scheduled(
                        session, now=now, lease_until=now + LEASE, kinds=kinds, limit=BATCH
                    )
                    claimed.extend(ids)
                    if len(ids) < BATCH:
                        break
                fig.sweep_ms.append((time.perf_counter() - t0) * 1000)
                fig.sweep_claimed = len(claimed)
                await session.rollback()  # the next repeat finds the same due rows
    finally:
        await services.close()


async def timed(label: str, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    t0 = time.perf_counter()
    print(f"bench: {label} ...", flush=True)
    await fn()
    print(f"bench: {label} done in {time.perf_counter() - t0:.1f} s", flush=True)


PARTS = ("webhook", "broadcast", "sweep")


async def sqlite_run(work: Path, parts: tuple[str, ...] = PARTS) -> Figures:
    fig = Figures("sqlite")

    async def fresh(name: str) -> str:
        (work / name).mkdir()
        url = f"sqlite:///{work / name / 'probono.db'}"
        await migrate.upgrade_async(url)
        return url

    if "webhook" in parts:
        url = await fresh("w")
        await timed("sqlite webhook", lambda: bench_webhook(fig, url, work / "w"))
    if "broadcast" in parts:
        url = await fresh("b")
        await timed("sqlite broadcast", lambda: bench_broadcast(fig, url, work / "b"))
    if "sweep" in parts:
        url = await fresh("s")
        await timed("sqlite sweep", lambda: bench_sweep(fig, url, work / "s"))
    return fig


async def _pg_admin(base_url: str, sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    base = make_url(base_url)
    conn = await asyncpg.connect(
        host=base.host or "127.0.0.1",
        port=base.port or 5432,
        user=base.username or "postgres",
        password=base.password,
        database=base.database or "postgres",
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def pg_run(base_url: str, work: Path, parts: tuple[str, ...] = PARTS) -> Figures:
    fig = Figures("postgresql")
    names: list[str] = []

    async def fresh() -> str:
        name = f"probono_bench_{uuid.uuid4().hex[:10]}"
        await _pg_admin(base_url, f'CREATE DATABASE "{name}"')
        names.append(name)
        url = make_url(base_url).set(database=name).render_as_string(hide_password=False)
        await asyncio.to_thread(migrate.upgrade, url)
        return url

    try:
        for part in ("pw", "pp", "pb", "ps"):
            (work / part).mkdir()
        if "webhook" in parts:
            url = await fresh()
            await timed("postgresql webhook", lambda: bench_webhook(fig, url, work / "pw"))
            url = await fresh()
            await timed(
                "postgresql webhook, two serve processes",
                lambda: bench_webhook_pair(fig, url, work / "pp"),
            )
        if "broadcast" in parts:
            url = await fresh()
            await timed(
                "postgresql broadcast",
                lambda: bench_broadcast(fig, url, work / "pb", PG_BROADCAST_RECIPIENTS),
            )
        if "sweep" in parts:
            url = await fresh()
            await timed("postgresql sweep", lambda: bench_sweep(fig, url, work / "ps"))
    finally:
        for name in names:
            await _pg_admin(base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return fig


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def report(figs: list[Figures], command: str, seconds: float) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"- Command: `{command}`",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}",
        f"- Machine: {os.cpu_count()} CPUs (nproc), {platform.machine()}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}",
        f"- Whole run: {seconds:.0f} s",
        "",
        "Method: each webhook figure is the median of "
        f"{ROUNDS} alternating {RUN_SECONDS:.0f}-second runs at {CONCURRENCY} concurrent "
        "connections from one in-process aiohttp load generator on loopback, signed, distinct "
        f"inbound texts from {PHONES} numbers. The baseline is a bare aiohttp process answering "
        "the same empty TwiML (bench/bare_server.py). The full path is `probono serve` "
        "(signature check, dedupe, encrypted store-first commit, acknowledgement; the intake "
        "replies go out to the fake Twilio in the same process meanwhile). The broadcast runs "
        "in-process: plan, enqueue, then the real Dispatcher drains to the fake Twilio. The "
        "sweep claims the due reminders (repo.claim_scheduled, the scheduler's claim, batches of "
        f"{BATCH}) among {APPOINTMENTS * 3:,} reminder rows, rolled back each time.",
        "",
    ]
    for fig in figs:
        lines += [f"## {fig.backend}", "", "| figure | value | target |", "|---|---|---|"]
        if fig.webhook_full_rps:
            lines += [
                f"| webhook_ratio | {fig.webhook_ratio:.2f} (full "
                f"{statistics.median(fig.webhook_full_rps):.0f} req/s / bare "
                f"{statistics.median(fig.webhook_bare_rps):.0f} req/s) | >= 0.3 |",
                f"| webhook latency p50 / p99 | {fig.p50_ms:.1f} ms / {fig.p99_ms:.1f} ms "
                "| p99 << 15 s |",
                f"| webhook non-200 answers | {fig.webhook_errors} | 0 |",
            ]
            answered = (
                f"{fig.answered_after_s:.0f} s"
                if fig.answered_after_s is not None
                else "not within 600 s"
            )
            lines.append(
                f"| every stored text answered (the intake backlog after the load) | {answered}, "
                f"{fig.texts_stored} texts | - |"
            )
            lines.append(
                f"| rss_mb of `probono serve` after the webhook run | {fig.rss_mb:.0f} | < 200 |"
            )
        if fig.pair_rps:
            pair = statistics.median(fig.pair_rps)
            pair_bare = statistics.median(fig.pair_bare_rps)
            lines.append(
                f"| two `probono serve` on one database: ratio | {pair / pair_bare:.2f} "
                f"({pair:.0f} req/s / bare {pair_bare:.0f} req/s) | - |"
            )
        if fig.broadcast_rate is not None:
            lines += [
                f"| broadcast_rate_ratio | {fig.broadcast_rate / SEND_RATE:.3f} "
                f"({fig.broadcast_rate:.1f} msg/s / {SEND_RATE}) | >= 0.95 |",
                f"| broadcast sent / duplicates | {fig.broadcast_sent} / "
                f"{fig.broadcast_duplicates} | all / 0 |",
                f"| broadcast plan + enqueue | {fig.broadcast_plan_s:.1f} s + "
                f"{fig.broadcast_enqueue_s:.1f} s | a few seconds |",
            ]
        if fig.sweep_ms:
            lines.append(
                f"| sweep_ms (median of {SWEEP_REPEATS}) | "
                f"{statistics.median(fig.sweep_ms):.1f} ({fig.sweep_claimed} claimed) | < 100 |"
            )
        lines += [
            "",
            f"Raw: full req/s {_fmt(fig.webhook_full_rps)}; bare req/s "
            f"{_fmt(fig.webhook_bare_rps)}; two servers req/s {_fmt(fig.pair_rps)} (bare "
            f"{_fmt(fig.pair_bare_rps)}); sweep ms {_fmt(fig.sweep_ms)}.",
            "",
        ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="probono-bot against its limits. A full run writes "
        "bench/RESULTS.md and ends with one `bench:` line; --only or --backend runs print "
        "their figures without touching RESULTS.md.",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=PARTS,
        help="run only this part (repeatable); default: all three",
    )
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgresql", "both"),
        default="both",
        help="both (default) runs PostgreSQL too when TEST_DATABASE_URL is set",
    )
    return parser.parse_args(argv)


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts = tuple(args.only) if args.only else PARTS
    full_run = parts == PARTS and args.backend == "both"
    started = time.perf_counter()
    figs: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="probono-bench-") as tmp:
        work = Path(tmp)
        if args.backend in ("sqlite", "both"):
            (work / "sqlite").mkdir()
            figs.append(await sqlite_run(work / "sqlite", parts))
        pg = os.environ.get("TEST_DATABASE_URL")
        if args.backend in ("postgresql", "both") and pg:
            (work / "pg").mkdir()
            try:
                figs.append(await pg_run(pg, work / "pg", parts))
            except OSError as exc:  # PostgreSQL not running: skip, say so
                print(f"bench: PostgreSQL skipped ({type(exc).__name__})", flush=True)
        elif args.backend != "sqlite":
            print("bench: PostgreSQL skipped (TEST_DATABASE_URL not set)", flush=True)
    command = "make bench" + (
        " (TEST_DATABASE_URL set)" if os.environ.get("TEST_DATABASE_URL") else ""
    )
    body = report(figs, command, time.perf_counter() - started)
    if full_run:
        # What the figures mean (written by hand, from profiles) follows them in RESULTS.md.
        analysis = REPO / "bench" / "ANALYSIS.md"
        if analysis.exists():
            body += "\n" + analysis.read_text()
        out = REPO / "bench" / "RESULTS.md"
        out.write_text(body + "\n")
    else:
        print(body)
    for fig in figs:
        figures = []
        if fig.webhook_full_rps:
            figures.append(f"webhook_ratio={fig.webhook_ratio:.2f}")
        if fig.broadcast_rate is not None:
            figures.append(f"broadcast_rate_ratio={fig.broadcast_rate / SEND_RATE:.3f}")
        if fig.sweep_ms:
            figures.append(f"sweep_ms={statistics.median(fig.sweep_ms):.1f}")
        if fig.webhook_full_rps:
            figures.append(f"rss_mb={fig.rss_mb:.0f}")
        if fig.backend != "sqlite":
            print(f"bench ({fig.backend}): " + " ".join(figures))
    # One summary line, last: SQLite's figures.
    for fig in figs:
        if fig.backend == "sqlite":
            print(
                "bench: "
                + " ".join(
                    f
                    for f in [
                        f"webhook_ratio={fig.webhook_ratio:.2f}" if fig.webhook_full_rps else "",
                        f"broadcast_rate_ratio={fig.broadcast_rate / SEND_RATE:.3f}"
                        if fig.broadcast_rate is not None
                        else "",
                        f"sweep_ms={statistics.median(fig.sweep_ms):.1f}" if fig.sweep_ms else "",
                        f"rss_mb={fig.rss_mb:.0f}" if fig.webhook_full_rps else "",
                    ]
                    if f
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
