"""The order of a task's remaining attempts: which arms, then which first.

A task whose run fails is run again on another arm (core.lifecycle's
exclusions), up to its restart budget. Its chance of success then depends
on the set of arms its remaining attempts will use, and its cost on the
order they are tried in. The simulator's `mixed` scenario showed the
difference: a router that escalated straight to the dearest arm after a
failure succeeded as often as cheap-to-strong baselines at 1.4 times
their price, and in `degrading` one that let a weak arm take an attempt
from a strong one lost tasks.

So when the request says how many attempts are left, the router plans
them: the plan is the `attempts` arms most likely to succeed (task fit;
arms below the task type's quality floor only when the arms above it are
fewer than the attempts, since they would run on a later attempt anyway),
and within the plan the strategy's score decides the order, so a cheap
adequate arm goes first while attempts remain and the last attempt takes
the best fit left. Arms outside the plan follow, best fit first, in case
every reservation in the plan is refused.
"""

from __future__ import annotations

from factoryd.routing.decision import Ranked


def _fit(entry: Ranked) -> tuple[float, float, int]:
    components = entry[2].components
    assert components is not None, "a rejected arm is never ranked"
    return (-components.task_fit, entry[0], entry[1])


def cascade(
    ranked: list[Ranked], below: list[Ranked], attempts: int
) -> tuple[list[Ranked], list[Ranked]]:
    """(the ranking to reserve in, the below-floor arms left out of it).

    `ranked`: arms above the quality floor; `below`: arms under it;
    `attempts`: this run and the runs left after it (at least 1).
    """
    by_fit = sorted(ranked, key=_fit) + sorted(below, key=_fit)
    n = max(attempts, 1)
    plan, rest = by_fit[:n], by_fit[n:]
    plan.sort()
    kept = {id(e) for e in plan}
    left_out = [e for e in below if id(e) not in kept]
    order = plan + [e for e in rest if not e[2].below_quality]
    left_out.sort()
    return order, left_out
