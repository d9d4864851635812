"""The journal's committer thread: order, errors, cancelled waiters, close."""

from __future__ import annotations

import asyncio
import threading

import pytest
from factoryd.state.committer import Committer


def test_jobs_run_in_order_on_one_other_thread() -> None:
    seen: list[tuple[int, str]] = []

    async def main() -> list[int]:
        c = Committer()
        try:

            def job(i: int) -> int:
                seen.append((i, threading.current_thread().name))
                return i * 2

            return list(await asyncio.gather(*(c.run(lambda i=i: job(i)) for i in range(50))))
        finally:
            c.close()

    assert asyncio.run(main()) == [i * 2 for i in range(50)]
    assert [i for i, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"factoryd-journal"}


def test_an_error_reaches_its_waiter_and_the_next_job_still_runs() -> None:
    async def main() -> int:
        c = Committer()
        try:
            with pytest.raises(ValueError, match="disk says no"):
                await c.run(lambda: (_ for _ in ()).throw(ValueError("disk says no")))
            return int(await c.run(lambda: 7))
        finally:
            c.close()

    assert asyncio.run(main()) == 7


def test_a_cancelled_waiter_does_not_undo_its_job_and_close_waits_for_it() -> None:
    release, done = threading.Event(), threading.Event()

    def slow() -> None:
        release.wait(10)
        done.set()

    async def main(c: Committer) -> None:
        waiter = asyncio.ensure_future(c.run(slow))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert not done.is_set()  # the waiter left; the job goes on

    c = Committer()
    asyncio.run(main(c))
    release.set()
    c.close()  # returns once the queued job has run
    assert done.is_set()
