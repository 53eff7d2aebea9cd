"""The cron module: the trigger type ``cron``, as the reference has it.

A binding's config is ``{"expression": str, "condition_function_id"?: str}`` (:mod:`.expression` says which
expressions; times are UTC). At each fire time the bound function is called with the reference's payload
``{"trigger": "cron", "job_id": <binding id>, "scheduled_time": <RFC 3339>, "actual_time": <RFC 3339>}``;
with a condition function, that function is called first with the same payload and a result of ``false``
skips the tick (any other result, ``null`` included, lets it run; an error skips it and counts as a failure).

Policies:

* **One fire per tick per job** among every binding of the job on every engine sharing the claims
  (:mod:`.claims`): the same function, expression and condition bound by several workers, or on several
  engines on one Redis, fire once.
* **No overlap on an engine.** A tick that comes while the job's previous fire is still running is skipped
  (and counted as missed); another engine may take it.
* **No catch-up.** A scheduler that wakes late fires the tick it waited for (``actual_time`` shows the delay)
  and skips the ones that passed meanwhile; ticks that passed while no engine ran the job are not run either.
  Both are logged and counted as missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from iii.modules.api import BindingInfo, InvocationError, MetricSample, ModuleHost
from iii.modules.backends import Backend, check_backend, uses_redis

from .claims import ClaimError, LocalClaims, RedisClaims, TickClaims, job_key
from .clock import Clock, SystemClock
from .expression import CronExpressionError, CronSchedule, parse

log = logging.getLogger("iii.modules.cron")

MISSED_COUNT_LIMIT = 1000
"""Missed ticks are counted up to this many per gap (an every-second job down for a day has 86,400)."""


@dataclass(frozen=True, slots=True)
class CronSettings:
    redis_url: str | None = None
    backend: Backend = "auto"
    """``auto``: claims on Redis when ``redis_url`` is set, else in this process."""
    key_prefix: str = "iii:cron:"
    """Prefix of the Redis keys (tick locks and last fires)."""
    lock_ttl_s: float = 60.0
    """How long a tick's lock lives on Redis: more than the engines' clocks may disagree."""
    invoke_timeout_s: float | None = None
    """How long one fire (and one condition call) may take (None: the host's invocation timeout)."""

    def __post_init__(self) -> None:
        check_backend("cron", self.backend, self.redis_url)
        if self.lock_ttl_s <= 0:
            raise ValueError("cron lock_ttl_s must be positive")

    @property
    def uses_redis(self) -> bool:
        return uses_redis(self.backend, self.redis_url)


@dataclass(slots=True)
class JobCounts:
    fires: int = 0
    """Ticks this engine fired."""
    failures: int = 0
    """Fires whose function (or condition function) answered an error."""
    missed: int = 0
    """Ticks no engine is known to have fired here: late wake-ups, overlaps, gaps with no engine running it."""


@dataclass(slots=True)
class Job:
    """One accepted binding and its scheduler."""

    binding: BindingInfo
    schedule: CronSchedule
    condition_function_id: str | None
    key: str
    counts: JobCounts
    bound_at: datetime
    next_run: datetime | None = None
    last_run: datetime | None = None
    last_outcome: str | None = None
    """ok, failed, condition_false, condition_failed, fired_elsewhere, busy, claim_failed."""
    last_error: str | None = None
    task: asyncio.Task[None] | None = None
    running: asyncio.Task[None] | None = None
    """The fire in progress."""


class CronModule:
    """Fires bound functions on cron schedules (see the module docstring)."""

    name = "cron"

    def __init__(self, settings: CronSettings | None = None, *, clock: Clock | None = None) -> None:
        self.settings = settings or CronSettings()
        self.clock: Clock = clock or SystemClock()
        self._host: ModuleHost | None = None
        self._claims: TickClaims | None = None
        self._jobs: dict[str, Job] = {}
        """binding id -> job."""
        self._counts: dict[tuple[str, str], JobCounts] = {}
        """(function id, expression) -> counts, kept after the bindings go (counters never go back)."""

    # --- Module ---------------------------------------------------------------------------------------

    async def start(self, host: ModuleHost) -> None:
        self._host = host
        if self.settings.uses_redis:
            assert self.settings.redis_url is not None
            self._claims = RedisClaims(
                self.settings.redis_url, key_prefix=self.settings.key_prefix, lock_ttl_s=self.settings.lock_ttl_s
            )
        else:
            self._claims = LocalClaims()
        await self._claims.start()
        host.register_trigger_type(
            "cron", self, description="Fire on a cron schedule (UTC; sec min hour day month weekday [year])"
        )

    async def stop(self) -> None:
        tasks = []
        for job in self._jobs.values():
            tasks += self._cancel(job)
        self._jobs.clear()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._claims is not None:
            await self._claims.close()

    def metrics(self) -> Iterable[MetricSample]:
        for (function_id, expression), counts in self._counts.items():
            labels = {"function_id": function_id, "expression": expression}
            yield MetricSample("cron_fires", counts.fires, labels, "Ticks this engine fired", "counter")
            yield MetricSample("cron_failures", counts.failures, labels, "Fires that answered an error", "counter")
            missed_help = "Ticks skipped: late, overlapping, or no engine running"
            yield MetricSample("cron_missed", counts.missed, labels, missed_help, "counter")
        yield MetricSample("cron_jobs", len(self._jobs), {}, "Cron bindings scheduled")

    def snapshot(self) -> Mapping[str, Any]:
        assert self._claims is not None, "snapshot before start"
        jobs = [
            {
                "binding_id": job.binding.binding_id,
                "function_id": job.binding.function_id,
                "expression": job.schedule.expression,
                "job_key": job.key,
                "next_run": _iso(job.next_run),
                "last_run": _iso(job.last_run),
                "last_outcome": job.last_outcome,
                "last_error": job.last_error,
                "fires": job.counts.fires,
                "failures": job.counts.failures,
                "missed": job.counts.missed,
            }
            for job in sorted(self._jobs.values(), key=lambda job: (job.next_run is None, job.next_run or job.bound_at))
        ]
        return {**self._claims.describe(), "jobs": jobs}

    def next_fire(self, binding_id: str) -> datetime | None:
        """When the binding's job fires next on this engine (None: unknown binding, or no fire time left)."""
        job = self._jobs.get(binding_id)
        if job is None:
            return None
        return job.next_run or job.schedule.next_after(max(job.bound_at, self.clock.now()))

    def describe(self, binding_id: str) -> Mapping[str, Any]:
        """What the listings show with a cron binding (:class:`~iii.modules.api.DescribingProvider`): its
        next and last run on this engine."""
        job = self._jobs.get(binding_id)
        if job is None:
            return {}
        return {"next_run": _iso(self.next_fire(binding_id)), "last_run": _iso(job.last_run)}

    async def wait_idle(self) -> None:
        """Return when no fire is running."""
        while running := [job.running for job in self._jobs.values() if job.running is not None]:
            await asyncio.gather(*running, return_exceptions=True)

    # --- TriggerProvider ------------------------------------------------------------------------------

    def activate(self, binding: BindingInfo) -> str | None:
        expression = binding.config.get("expression")
        if expression is None or expression == "":
            return "Cron expression is required"
        if not isinstance(expression, str):
            return "Cron expression must be a string"
        try:
            schedule = parse(expression)
        except CronExpressionError as error:
            return f"Invalid cron expression {expression!r}: {error}"
        condition = binding.config.get("condition_function_id")
        if condition is not None and (not isinstance(condition, str) or not condition):
            return "condition_function_id must be a non-empty string"
        now = self.clock.now()
        if schedule.next_after(now) is None:
            return f"Cron expression {expression!r} has no fire time after {_iso(now)}"
        assert self._host is not None, "activate before start"
        key = (binding.function_id, schedule.expression)
        job = Job(
            binding=binding,
            schedule=schedule,
            condition_function_id=condition,
            key=job_key(binding.function_id, schedule.expression, condition),
            counts=self._counts.setdefault(key, JobCounts()),
            bound_at=now,
        )
        self._jobs[binding.binding_id] = job
        job.task = asyncio.get_running_loop().create_task(self._schedule(job), name=f"cron:{binding.binding_id}")
        log.info("cron: %s scheduled with %r", binding.function_id, schedule.expression)
        return None

    def deactivate(self, binding: BindingInfo) -> None:
        job = self._jobs.pop(binding.binding_id, None)
        if job is not None:
            self._cancel(job)

    # --- scheduling -----------------------------------------------------------------------------------

    def _cancel(self, job: Job) -> list[asyncio.Task[None]]:
        tasks = [task for task in (job.task, job.running) if task is not None]
        for task in tasks:
            task.cancel()
        return tasks

    async def _schedule(self, job: Job) -> None:
        try:
            await self._report_gap(job)
            cursor = job.bound_at
            while True:
                tick = job.schedule.next_after(cursor)
                job.next_run = tick
                if tick is None:
                    log.info("cron: %r has no fire time left; %s is not fired again", job.schedule.expression, job.key)
                    return
                await self.clock.sleep_until(tick)
                now = self.clock.now()
                cursor = max(tick, now)
                self._count_late(job, tick, now)
                await self._tick(job, tick)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("cron: the scheduler of %s stopped", job.binding.function_id)

    async def _tick(self, job: Job, tick: datetime) -> None:
        """Fire ``tick`` unless the previous fire still runs or someone else claimed it."""
        if job.running is not None:
            job.last_outcome = "busy"
            job.counts.missed += 1
            log.warning(
                "cron: %s skips its tick %s: the fire of %s is still running",
                job.binding.function_id,
                _iso(tick),
                _iso(job.last_run),
            )
            return
        assert self._claims is not None
        try:
            claimed = await self._claims.claim(job.key, tick)
        except ClaimError as error:
            job.last_outcome, job.last_error = "claim_failed", str(error)
            job.counts.missed += 1
            log.error("cron: %s does not fire its tick %s: %s", job.binding.function_id, _iso(tick), error)
            return
        if not claimed:
            job.last_outcome = "fired_elsewhere"
            return
        job.last_run = tick
        job.running = asyncio.get_running_loop().create_task(self._fire(job, tick, self.clock.now()))

    async def _fire(self, job: Job, tick: datetime, actual: datetime) -> None:
        payload: dict[str, Any] = {
            "trigger": "cron",
            "job_id": job.binding.binding_id,
            "scheduled_time": _iso(tick),
            "actual_time": _iso(actual),
        }
        job.counts.fires += 1
        try:
            await self._run_fire(job, payload)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug, not the function's failure: say so and keep the scheduler going
            log.exception("cron: firing %s failed", job.binding.function_id)
            self._failed(job, "failed", error)
        finally:
            job.running = None

    async def _run_fire(self, job: Job, payload: dict[str, Any]) -> None:
        """The condition function (if any), then the function; the outcome goes to ``job``."""
        assert self._host is not None
        timeout_s = self.settings.invoke_timeout_s
        if job.condition_function_id is not None:
            try:
                verdict = await self._host.invoke(job.condition_function_id, payload, timeout_s=timeout_s)
            except InvocationError as error:
                self._failed(job, "condition_failed", error)
                return
            if verdict is False:
                job.last_outcome, job.last_error = "condition_false", None
                return
        try:
            await self._host.invoke(job.binding.function_id, payload, timeout_s=timeout_s)
        except InvocationError as error:
            self._failed(job, "failed", error)
            return
        job.last_outcome, job.last_error = "ok", None

    def _failed(self, job: Job, outcome: str, error: Exception) -> None:
        job.last_outcome, job.last_error = outcome, str(error)
        job.counts.failures += 1
        log.warning("cron: %s (%s) failed: %s", job.binding.function_id, job.schedule.expression, error)

    def _count_late(self, job: Job, tick: datetime, now: datetime) -> None:
        """Count and log the ticks after ``tick`` that passed before the scheduler woke (they are skipped)."""
        missed = job.schedule.count_between(tick, now, MISSED_COUNT_LIMIT)
        if missed:
            job.counts.missed += missed
            log.warning(
                "cron: %s woke %.1f s late: fires its tick %s and skips %s tick(s) that passed meanwhile",
                job.binding.function_id,
                (now - tick).total_seconds(),
                _iso(tick),
                _count_text(missed),
            )

    async def _report_gap(self, job: Job) -> None:
        """Count and log the ticks since the job's last fire, anywhere, that no engine ran before this binding."""
        assert self._claims is not None
        try:
            last = await self._claims.last_fire(job.key)
        except ClaimError as error:
            log.warning("cron: cannot tell when %s last fired: %s", job.binding.function_id, error)
            return
        if last is None:
            return
        missed = job.schedule.count_between(last, job.bound_at, MISSED_COUNT_LIMIT)
        if missed:
            job.counts.missed += missed
            log.info(
                "cron: %s (%s) last fired at %s; %s tick(s) since then were not run (cron does not catch up)",
                job.binding.function_id,
                job.schedule.expression,
                _iso(last),
                _count_text(missed),
            )


def _iso(moment: datetime | None) -> str | None:
    """RFC 3339, as the reference writes it (``+00:00``; fractions only when not whole seconds)."""
    return None if moment is None else moment.isoformat()


def _count_text(count: int) -> str:
    return f"{count}+" if count >= MISSED_COUNT_LIMIT else str(count)
