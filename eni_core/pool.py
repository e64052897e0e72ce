"""The shared-ENI pool policy, as pure functions: node state + config + now -> actions.

Every rule of the seed's "Non-static IP address mode" lives here and only here:

- bound IPs are kept within [pods + min pre-bound, pods + max pre-bound], clamped to max bindable;
- below the lower bound, bind at once up to it; above the upper bound, release one idle IP per release
  interval (all the excess per interval with quick release); above max bindable (its limits lowered, or
  a pod gone from a node that has more pods than it may bind), release the idle excess at once: the
  ipamd tries it in every reconcile, even while it backs off from a failing cloud; while the cloud
  refuses, the excess stays bound and is tried again at the next reconcile; once the cloud answers, all
  of it goes in that one reconcile (never paced by the release interval);
- least ENIs: a pod's IP comes from the ENI with the most allocated IPs; releases take idle IPs of the
  ENI with the fewest allocated IPs; a new ENI only when the bound ENIs' IP quota or subnets are used up,
  in the node's subnet with the most available addresses; an ENI with no secondary IP left is deleted
  when no IP is wanted;
- ties go to the older ENI and to the subnet listed first.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from eni_core.model import Eni, NodeLimits, PoolConfig, Tally

__all__ = [
    "Action",
    "BindIps",
    "CreateEni",
    "DeleteEni",
    "Plan",
    "ReleaseIps",
    "bounds",
    "choose_pod_ip",
    "choose_subnet",
    "first_draws",
    "next_draw",
    "no_subnet_for_new_eni",
    "over_max_bindable",
    "plan",
]


def _why() -> str:
    return field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class BindIps:
    eni_id: str
    count: int
    reason: str = _why()


@dataclass(frozen=True)
class CreateEni:
    """Create and attach an ENI in `subnet_id`, then bind `count` secondary IPs on it."""

    subnet_id: str
    count: int
    reason: str = _why()


@dataclass(frozen=True)
class ReleaseIps:
    eni_id: str
    ips: tuple[IPv4Address, ...]
    reason: str = _why()


@dataclass(frozen=True)
class DeleteEni:
    eni_id: str
    reason: str = _why()


Action = BindIps | CreateEni | ReleaseIps | DeleteEni


@dataclass(frozen=True)
class Plan:
    """What the pool should do now. `release_due` is when the next timed release may happen (None: no
    excess); `shortfall` says why the lower bound cannot be reached, if it cannot."""

    actions: tuple[Action, ...]
    release_due: float | None
    shortfall: str | None = None


def bounds(pods: int, config: PoolConfig, limits: NodeLimits) -> tuple[int, int]:
    """The bound-IP window (pods + min pre-bound, pods + max pre-bound), clamped to max bindable."""
    cap = limits.max_bindable
    return min(pods + config.min_prebound, cap), min(pods + config.max_prebound, cap)


def over_max_bindable(enis: Collection[Eni], limits: NodeLimits, tally: Tally | None = None) -> int:
    """How many idle IPs are above max bindable: the ones to release at once (a pod's IP never is).
    `tally` is the ENIs' (see `Tally`), if it is kept; without it they are counted."""
    tally = tally if tally is not None else Tally.of(enis)
    return max(0, min(tally.bound - limits.max_bindable, tally.idle))


ENI_PRIMARY = 1  # a new ENI takes its own primary address from its subnet ...
NEW_ENI_MIN_FREE = ENI_PRIMARY + 1  # ... and is worth making for one secondary IP or more


def choose_subnet(node_subnets: Sequence[str], free: Mapping[str, int]) -> str | None:
    """The subnet for a new ENI: of the node's subnets with `NEW_ENI_MIN_FREE` free addresses or more, the
    one with the most available addresses (ties: the one listed first); None if none can serve.

    Examples
    --------
    >>> choose_subnet(["subnet-a", "subnet-b", "subnet-c"], {"subnet-a": 9, "subnet-b": 40, "subnet-c": 40})
    'subnet-b'
    >>> choose_subnet(["subnet-a"], {"subnet-a": 1}) is None
    True
    """
    usable = [s for s in node_subnets if free.get(s, 0) >= NEW_ENI_MIN_FREE]
    if not usable:
        return None
    return max(usable, key=lambda s: (free[s], -node_subnets.index(s)))


SUBNETS_NAMED = 5  # a message names at most this many of a node's subnets (it may have 64), then counts the rest


def no_subnet_for_new_eni(node_subnets: Sequence[str], free: Mapping[str, int]) -> str:
    """Why `choose_subnet` found none, and what to do. The message goes into every failed poll's event, so it
    names a few subnets and counts the rest.

    >>> no_subnet_for_new_eni([f"s{i}" for i in range(7)], {"s0": 1})  # doctest: +ELLIPSIS
    'no subnet can serve a new ENI: s0 (1 free), s1 (0 free), ..., s4 (0 free) and 2 more; add a subnet to...'
    """
    names = ", ".join(f"{s} ({free.get(s, 0)} free)" for s in node_subnets[:SUBNETS_NAMED])
    more = len(node_subnets) - SUBNETS_NAMED
    return (f"no subnet can serve a new ENI: {names}{f' and {more} more' if more > 0 else ''}; add a subnet to "
            "the node or free addresses")


def _by_most_allocated(enis: Collection[Eni]) -> list[Eni]:
    return sorted(enis, key=lambda e: (-e.allocated, e.seq))


def _by_fewest_allocated(enis: Collection[Eni]) -> list[Eni]:
    return sorted(enis, key=lambda e: (e.allocated, e.seq))


def choose_pod_ip(enis: Collection[Eni], draw: int) -> tuple[Eni, IPv4Address] | None:
    """A pod's IP: a random idle IP of the ENI with the most allocated IPs that has one, which a random
    64-bit `draw` (`next_draw`) picks among them (uniformly: the bias of taking it modulo a count of at
    most a few hundred IPs is below one in 10^16)."""
    for eni in _by_most_allocated(enis):
        if eni.allocated < len(eni.ips):
            return eni, eni.idle_at(draw % (len(eni.ips) - eni.allocated))
    return None


MASK_64 = (1 << 64) - 1


def first_draws(seed: str) -> int:
    """The first state of `next_draw` for a seed text, the same in every process and on every machine.

    >>> first_draws("1:node-1") == first_draws("1:node-1") != first_draws("1:node-2")
    True
    """
    return int.from_bytes(hashlib.blake2b(seed.encode(), digest_size=8).digest(), "little")


def next_draw(state: int) -> tuple[int, int]:
    """(the next state, a random 64-bit number): SplitMix64, a generator whose whole state is one 64-bit
    number. A node keeps that number in its ipamd, where a `random.Random` of its own was an object of
    2.5 KB with an attribute table beside it, three cold reads for every pod in a large cluster (scale
    model, docs/performance.md).

    >>> state, draw = next_draw(first_draws("seed"))
    >>> next_draw(state)[1] != draw and 0 <= draw < 2**64
    True
    """
    state = (state + 0x9E3779B97F4A7C15) & MASK_64
    z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & MASK_64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK_64
    return state, z ^ (z >> 31)


def _release(enis: Collection[Eni], count: int, reason: str) -> list[ReleaseIps]:
    """Up to `count` idle IPs, from the ENI with the fewest allocated IPs first, newest-bound first."""
    actions = []
    for eni in _by_fewest_allocated(enis):
        if count <= 0:
            break
        idle = eni.newest_idle(count)
        if idle:
            actions.append(ReleaseIps(eni.id, tuple(idle), reason))
            count -= len(idle)
    return actions


def _grow(
    enis: Collection[Eni],
    need: int,
    node_subnets: Sequence[str],
    subnet_free: Mapping[str, int],
    limits: NodeLimits,
    why: str,
) -> tuple[list[Action], str | None]:
    free = dict(subnet_free)
    actions: list[Action] = []
    # Empty ENIs stuck in a dry subnet hold an ENI slot for nothing: give the slot back.
    stuck = [e for e in enis if not e.ips and free.get(e.subnet_id, 0) <= 0]
    actions += [DeleteEni(e.id, f"no secondary IP left and subnet {e.subnet_id} is used up") for e in stuck]
    live = [e for e in enis if e not in stuck]
    for eni in _by_most_allocated(live):
        take = min(need, limits.ips_per_eni - len(eni.ips), free.get(eni.subnet_id, 0))
        if take > 0:
            actions.append(BindIps(eni.id, take, f"{why}; ENI with the most allocated IPs that has room"))
            free[eni.subnet_id] -= take
            need -= take
    slots = limits.max_enis - len(live)
    while need > 0 and slots > 0:
        subnet = choose_subnet(node_subnets, free)
        if subnet is None:
            return actions, no_subnet_for_new_eni(node_subnets, free)
        take = min(need, limits.ips_per_eni, free[subnet] - ENI_PRIMARY)
        actions.append(CreateEni(subnet, take, f"{why}; bound ENIs are full or their subnets used up; "
                                               f"{subnet} has the most available addresses ({free[subnet]})"))
        free[subnet] -= take + ENI_PRIMARY
        need -= take
        slots -= 1
    if need > 0:
        return actions, (
            f"{need} more IPs wanted but all {limits.max_enis} ENIs are bound and full or their subnets "
            f"are used up (max bindable {limits.max_bindable})"
        )
    return actions, None


def plan(
    enis: Collection[Eni],
    *,
    tally: Tally | None = None,
    pods: int,
    node_subnets: Sequence[str],
    subnet_free: Callable[[], Mapping[str, int]],
    limits: NodeLimits,
    config: PoolConfig,
    release_due: float | None,
    now: float,
) -> Plan:
    """The pool's next actions. `enis` is oldest first; `subnet_free` is called only when IPs are wanted.
    `tally` counts `enis` (see `Tally`), if it is kept: a plan within the bounds then reads no ENI.

    Examples
    --------
    >>> from eni_core.model import NodeLimits, PoolConfig
    >>> p = plan([], pods=0, node_subnets=["subnet-a"], subnet_free=lambda: {"subnet-a": 250},
    ...          limits=NodeLimits(3, 10), config=PoolConfig(), release_due=None, now=0.0)
    >>> p.actions
    (CreateEni(subnet_id='subnet-a', count=5),)
    """
    tally = tally if tally is not None else Tally.of(enis)
    low, high = bounds(pods, config, limits)
    bound = tally.bound
    if bound < low:
        why = f"bound {bound} < pods {pods} + min pre-bound {config.min_prebound}"
        if low < pods + config.min_prebound:
            why += f" (capped at max bindable {limits.max_bindable})"
        actions, shortfall = _grow(enis, low - bound, node_subnets, subnet_free(), limits, why)
        return Plan(tuple(actions), None, shortfall)

    actions: list[Action] = []
    over_cap = over_max_bindable(enis, limits, tally)
    if over_cap > 0:
        actions += _release(enis, over_cap, f"bound {bound} > max bindable {limits.max_bindable}: release at once")
        bound -= sum(len(a.ips) for a in actions if isinstance(a, ReleaseIps))

    due = release_due
    if bound > high:
        if due is None:
            due = now + config.release_interval
        elif now >= due:
            count = bound - high if config.quick_release else 1
            why = (f"bound {bound} > pods {pods} + max pre-bound {config.max_prebound} for "
                   f"{config.release_interval:g} s; ENI with the fewest allocated IPs")
            timed = _release(_after(enis, actions), count, why)
            actions += timed
            bound -= sum(len(a.ips) for a in timed)
            due = now + config.release_interval if bound > high else None
    else:
        due = None
    released = _released_counts(actions)
    if released or tally.empty:  # else every ENI keeps an IP: none to read
        actions += [DeleteEni(e.id, "no secondary IP left and none wanted")
                    for e in enis if len(e.ips) == released.get(e.id, 0)]
    return Plan(tuple(actions), due)


def _released_counts(actions: Sequence[Action]) -> dict[str, int]:
    """How many IPs `actions` release from each ENI. The releases of one plan are distinct idle IPs of
    their ENI, so an ENI is left with no IP when this count is all it has: the same answer as `_after`'s
    copies, without hashing every address of the ENIs touched."""
    counts: dict[str, int] = {}
    for a in actions:
        if isinstance(a, ReleaseIps):
            counts[a.eni_id] = counts.get(a.eni_id, 0) + len(a.ips)
    return counts


def _after(enis: Collection[Eni], actions: Sequence[Action]) -> list[Eni]:
    """The ENIs as they will be once `actions` (releases only) are done; untouched ENIs are shared."""
    released = {a.eni_id: set(a.ips) for a in actions if isinstance(a, ReleaseIps)}
    if not released:
        return list(enis)
    out = []
    for e in enis:
        gone = released.get(e.id)
        if gone:
            e = Eni(e.id, e.subnet_id, e.mac, e.primary_ip, e.device_index, e.seq,
                    {ip: p for ip, p in e.ips.items() if ip not in gone}, e.allocated)
        out.append(e)
    return out
