"""The pass's commits behind the loop: one at a time, asks coalesced, settled waits."""

from __future__ import annotations

import asyncio

from factoryd.reconcile.commits import Commits


class SlowFlush:
    """A flush that takes `gate` to finish; records overlaps and the asks it saw."""

    def __init__(self) -> None:
        self.running = 0
        self.overlap = False
        self.calls = 0
        self.gate = asyncio.Event()

    async def __call__(self) -> None:
        self.calls += 1
        self.running += 1
        self.overlap |= self.running > 1
        await self.gate.wait()
        self.running -= 1


def test_asks_coalesce_commits_never_overlap_and_settled_waits_for_the_last() -> None:
    async def main() -> None:
        flush = SlowFlush()
        commits = Commits(flush)
        task = asyncio.ensure_future(commits.run())
        for _ in range(5):  # five passes before the task runs: one commit
            commits.want()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert flush.calls == 1
        commits.want()  # asked during the commit: one more, after it
        commits.want()
        settled = asyncio.ensure_future(commits.settled())
        await asyncio.sleep(0)
        assert not settled.done() and flush.calls == 1
        flush.gate.set()
        await asyncio.wait_for(settled, 5)
        assert flush.calls == 2 and not flush.overlap and flush.running == 0
        await asyncio.wait_for(commits.settled(), 5)  # nothing new: one more commit, then idle
        assert flush.calls == 3
        task.cancel()

    asyncio.run(main())


def test_an_error_in_a_commit_ends_the_task() -> None:
    async def broken() -> None:
        raise RuntimeError("bug")

    async def main() -> None:
        commits = Commits(broken)
        task = asyncio.ensure_future(commits.run())
        commits.want()
        try:
            await asyncio.wait_for(task, 5)
        except RuntimeError as exc:
            assert str(exc) == "bug"
        else:
            raise AssertionError("the task went on after a failed commit")

    asyncio.run(main())
