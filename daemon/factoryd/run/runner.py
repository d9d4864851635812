"""One run's lifecycle: start, watch, time out, stall, stop, clean up, report.

A runner owns its process and nothing else. The reconciler asks it to stop
with a method call (`request_stop`), and it answers once, with a
`RunResult`, when the run is over and every process it started is gone.

How a stop escalates and how nothing is left behind is teardown.py's; what
a run is asked to do is runspec.py's (both re-exported here for callers).
After a kill the exit status is not trusted: the outcome is the reason we
killed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import psutil

from factoryd.core.events import Completion as AgentCompletion
from factoryd.core.events import LimitHit
from factoryd.core.outcome import Outcome, RunResult, StopRequest
from factoryd.proc import process
from factoryd.proc.arming import arm_after
from factoryd.proc.capture import PipeReader
from factoryd.proc.spawner import Spawner
from factoryd.run import teardown
from factoryd.run.runspec import Adoption, EventCallback, Gate, RunSpec, StartedCallback

#: How long to wait for pipes to close once every process is gone.
DRAIN_TIMEOUT = 2.0
#: A run's pipe readers join the loop's epoll set this long after its start;
#: one that ends sooner is read to EOF after its exit (capture.PipeReader.arm).
ARM_READERS_AFTER = 0.005


@dataclass(slots=True)
class _Watch:
    """Mutable bookkeeping private to one runner."""

    last_activity: float
    descendants: dict[int, psutil.Process] = field(default_factory=dict)
    limit: LimitHit | None = None


class Runner:
    """Runs one `RunSpec` to the end. Create one per run."""

    def __init__(
        self,
        spec: RunSpec,
        *,
        on_started: StartedCallback | None = None,
        on_event: EventCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
        gate: Gate | None = None,
        adoption: Adoption | None = None,
        spawner: Spawner | None = None,
    ) -> None:
        self.spec = spec
        #: Starts the leader off the loop (None: Popen, on the loop).
        self.spawner = spawner
        self.gate = gate
        self.adoption = adoption
        self.on_started = on_started
        self.on_event = on_event
        self.clock = clock
        self.pid: int | None = None
        self._watch = _Watch(last_activity=clock())
        # Events here are asyncio's own: the runner is asyncio-bound already (loop
        # readers), and an anyio.Event costs ten times as much to make.
        self._wake = asyncio.Event()
        self._started = 0.0
        self._stopped = False
        #: The first stop asked for (by the reconciler); later ones change nothing.
        self._stop: StopRequest | None = None

    def request_stop(self, request: StopRequest) -> None:
        """Ask the run to stop: honoured at once if it is running, right after
        its spawn if it is not running yet."""
        if self._stop is None:
            self._stop = request
        self._wake.set()

    def remember_descendants(self, procs: list[psutil.Process]) -> None:
        """Called by the reconciler's periodic scan: descendants seen alive."""
        teardown.remember(self._watch.descendants, procs)

    async def run(self) -> RunResult:
        spec = self.spec
        if self.gate is not None:
            await self.gate.event.wait()
        started = self._started = self._watch.last_activity = self.clock()
        if self.gate is not None and not self.gate.ok:
            return self._not_started(Outcome.SPAWN_FAILED, f"not started: {self.gate.error}")
        if self.adoption is not None:
            self._started = started = self.adoption.started
            adopted = process.adopt(
                self.adoption.pid, self.adoption.create_time, self.adoption.leader_fds
            )
            if adopted is None:
                # It was alive when recovery looked, moments ago: it ended on its own.
                result = self._not_started(
                    Outcome.EXIT_UNKNOWN, "ended while no daemon watched; exit status unknown"
                )
                result.started_ok = True
                return result
            child = adopted
            attached = "output reattached" if child.pipes() else "output not reattached"
            spec.log.note(f"adopted pid {child.pid} after a daemon restart ({attached})")
        else:
            try:
                child = await process.start(
                    self.spawner,
                    spec.argv,
                    cwd=spec.cwd,
                    env=spec.env,
                    stdin_path=spec.stdin_path,
                    record=None if spec.spawn_log is None else (spec.run_id, spec.spawn_log),
                )
            except process.SpawnError as exc:
                spec.log.note(f"spawn failed: {exc}")
                return self._not_started(Outcome.SPAWN_FAILED, str(exc))
            if self.on_started is not None:
                self.on_started(child.pid, child.leader_fds, child.create_time)
        self.pid = child.pid
        result = RunResult(spec.run_id, Outcome.FAILED, "", started=started, pid=child.pid)
        try:
            await self._supervise(child, result)
        finally:
            child.close()
            spec.log.close()
        summary = spec.parser.finish()
        result.usage = summary.usage
        result.parse_errors = summary.parse_errors
        result.bytes_logged = spec.log.written
        result.bytes_dropped = spec.log.dropped
        result.log_kept = spec.log.created
        result.log_error = spec.log.error
        result.ended = self.clock()
        return result

    def _not_started(self, outcome: Outcome, reason: str) -> RunResult:
        log = self.spec.log
        log.close()
        now = self.clock()
        return RunResult(
            self.spec.run_id,
            outcome,
            reason,
            started=now,
            ended=now,
            started_ok=False,
            log_kept=log.created,
            log_error=log.error,
        )

    # -- the watch ---------------------------------------------------------

    async def _supervise(self, child: process.Child, result: RunResult) -> None:
        spec = self.spec
        exited = asyncio.Event()
        status: list[int | None] = []
        loop = asyncio.get_running_loop()
        readers = [self._reader(fd, stream_name) for stream_name, fd in self._pipes(child)]
        arm_after(ARM_READERS_AFTER, readers)

        def on_exit() -> None:
            # The pidfd is readable once the leader has exited; reap it here,
            # on the loop's callback: no task waits for it.
            done, code = child.poll()
            if not done:
                helper = child.helper
                if helper is not None and helper.available:
                    # Exited, but the helper's report of its status is still on
                    # its way: listen for that instead of the (still readable) pidfd.
                    loop.remove_reader(child.pidfd)
                    helper.when_reported(child.pid, on_exit)
                else:
                    # The helper is gone: the leader is re-parented to us, and
                    # waitpid will have its status once the pidfd says it exited.
                    loop.add_reader(child.pidfd, on_exit)
                return
            loop.remove_reader(child.pidfd)
            status.append(code)
            exited.set()
            self._wake.set()

        helper = child.helper
        if helper is not None and helper.available:
            helper.when_reported(child.pid, on_exit)  # its report comes after the exit
        else:
            loop.add_reader(child.pidfd, on_exit)
        stop: StopRequest | None = None
        try:
            try:
                stop = await self._wait(exited)
                if stop is not None and not exited.is_set():
                    self._stopped = True
                    spec.log.note(f"stopping: {stop.reason}")
                    await teardown.terminate(
                        child,
                        self._watch.descendants,
                        exited.wait,
                        result,
                        spec.stop_grace,
                        spec.log,
                    )
                await exited.wait()
            except anyio.get_cancelled_exc_class():
                # The daemon is going away without asking us first: the process
                # group must not outlive its scope.
                self._stopped = True
                with anyio.CancelScope(shield=True):
                    if not exited.is_set():
                        await teardown.terminate(
                            child,
                            self._watch.descendants,
                            exited.wait,
                            result,
                            spec.stop_grace,
                            spec.log,
                        )
                    await teardown.clean_up(
                        child,
                        self._watch.descendants,
                        result,
                        spec.stop_grace,
                        spec.run_id,
                        self._stopped,
                    )
                raise
            if teardown.left_behind(
                child, self._watch.descendants, result, self._stopped
            ) or not all([r.done or r.poll() for r in readers]):
                with anyio.CancelScope(shield=True):
                    await teardown.clean_up(
                        child,
                        self._watch.descendants,
                        result,
                        spec.stop_grace,
                        spec.run_id,
                        self._stopped,
                    )
                    if not all(reader.done for reader in readers):
                        with anyio.move_on_after(DRAIN_TIMEOUT) as drain:
                            for reader in readers:
                                await reader.wait()
                        if drain.cancelled_caught:
                            spec.log.note("output pipes still open after every process was gone")
        finally:
            if not exited.is_set():
                loop.remove_reader(child.pidfd)
            for reader in readers:
                reader.stop()
        code = status[0] if status else None
        result.exit_status = code
        self._classify(result, stop if stop is not None else self._stop, code, child.adopted)

    def _pipes(self, child: process.Child) -> list[tuple[str, int]]:
        return child.pipes()

    def _reader(self, fd: int, stream_name: str) -> PipeReader:
        """Read one of the run's pipes: log it, parse it, watch for limits and stalls."""
        watch = self._watch
        feed_block = self.spec.parser.feed_block

        def on_lines(block: bytes, count: int) -> None:
            for event in feed_block(block, count, stream_name):
                if isinstance(event, LimitHit) and watch.limit is None:
                    watch.limit = event
                    self._wake.set()
                if self.on_event is not None:
                    self.on_event(event)

        def on_data() -> None:
            watch.last_activity = self.clock()

        return PipeReader(fd, self.spec.log, on_lines, on_data, armed=False)

    async def _wait(self, exited: asyncio.Event) -> StopRequest | None:
        """Sleep until exit, a stop request, a limit, the timeout or a stall."""
        spec = self.spec
        deadline_total = self._started + spec.timeout if spec.timeout is not None else None
        while not exited.is_set():
            request = self._stop
            if request is not None:
                return request
            if self._watch.limit is not None:
                return StopRequest(Outcome.LIMITED, f"usage limit: {self._watch.limit.text}")
            now = self.clock()
            deadlines = []
            if deadline_total is not None:
                if now >= deadline_total:
                    return StopRequest(
                        Outcome.TIMED_OUT, f"ran longer than its timeout of {spec.timeout:g}s"
                    )
                deadlines.append(deadline_total)
            if spec.stall_timeout is not None:
                stall_at = self._watch.last_activity + spec.stall_timeout
                if now >= stall_at:
                    return StopRequest(
                        Outcome.STALLED,
                        f"no output or agent event for {spec.stall_timeout:g}s",
                    )
                deadlines.append(stall_at)
            # Cleared, not remade: only this task waits on it, and nothing can set
            # it between the checks above and here (no await in between).
            self._wake.clear()
            if exited.is_set() or self._stop is not None:
                continue
            if not deadlines:
                await self._wake.wait()
                continue
            with anyio.move_on_after(min(deadlines) - now):
                await self._wake.wait()
        return self._stop

    def _classify(
        self, result: RunResult, stop: StopRequest | None, code: int | None, adopted: bool
    ) -> None:
        summary = self.spec.parser.summary
        limit = self._watch.limit or summary.limit
        if stop is not None and stop.outcome is not Outcome.LIMITED:
            result.outcome, result.reason = stop.outcome, stop.reason
            return
        if limit is not None:
            result.outcome = Outcome.LIMITED
            result.limit = limit
            result.reason = f"usage limit: {limit.text}"
            return
        completion: AgentCompletion | None = summary.completion
        if completion is not None and not completion.ok:
            result.outcome = Outcome.FAILED
            result.reason = completion.reason or f"agent reported an error ({_status(code)})"
            return
        if adopted:
            result.outcome = Outcome.EXIT_UNKNOWN
            result.reason = "adopted run exited; its status went to its former parent"
        elif code == 0:
            result.outcome = Outcome.SUCCEEDED
            result.reason = "exit status 0"
        else:
            result.outcome = Outcome.FAILED
            result.reason = _status(code)


def _status(code: int | None) -> str:
    return "no exit status" if code is None else process.describe_status(code)


__all__ = ["DRAIN_TIMEOUT", "Runner"]
