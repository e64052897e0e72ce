"""The node's IP address management daemon: runs the pool policy through the VPC API.

The policy (`eni_core.pool`) decides; the ipamd executes, retries what the cloud throttles, backs off
what keeps failing, checkpoints its datastore before it answers, and on restart reconciles what it
remembers with what the VPC says.
"""
from __future__ import annotations

import abc
import contextlib
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address

from eni_core import pool
from eni_core.clock import Clock
from eni_core.datastore import Allocation, Datastore
from eni_core.model import Eni, NodeLimits, PoolConfig
from eni_core.ports import EniRecord, NotFound, VpcApi, VpcError

__all__ = ["EniChange", "EniNode", "Ipamd", "RecoveryReport", "RetryPolicy"]


class EniChange(Enum):
    """What a listener of a node's ENIs is told: one came (its link should appear) or went."""

    ATTACHED = "attached"
    DETACHED = "detached"

EventSink = Callable[[dict], None]


@dataclass(frozen=True)
class RetryPolicy:
    """Retryable cloud errors are tried `attempts` times, `base` seconds apart, doubling; after that the
    ipamd backs off (doubling from `base`, at most `max_backoff`) before it tries that work again."""

    attempts: int = 3
    base: float = 0.1
    max_backoff: float = 30.0
    shortfall_poll: float = 30.0
    resync_window: float = 10.0  # after an ambiguous answer, re-sync with the VPC until this long has passed


NEVER = float("-inf")  # when an IP or ENI was seen that this ipamd did not see come
SEEN = struct.Struct("<Id")  # an IPv4 address, as a number, and when the ipamd saw it bound


def _newest(seen: bytes) -> float:
    """The time of the last of `EniNode._ips_seen`'s pairs, which are in time order: the newest."""
    return SEEN.unpack_from(seen, len(seen) - SEEN.size)[1]


MAX_DOUBLINGS = 1000  # 2 ** 1000 is about 1e301: any base reaches any cap long before, and it fits a float
DEFAULT_RETRY = RetryPolicy()  # one for every node that names none: an ipamd's calls read it, a cluster's stay warm


@dataclass
class RecoveryReport:
    adopted_enis: list[str] = field(default_factory=list)
    deleted_enis: list[str] = field(default_factory=list)
    adopted_ips: list[str] = field(default_factory=list)
    dropped_ips: list[str] = field(default_factory=list)
    rebound_ips: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[str]]:
        return dict(self.__dict__)


def describe(action: pool.Action) -> dict:
    """An action as an event: what, where, and the rule that asked for it."""
    if isinstance(action, pool.BindIps):
        return {"action": "bind", "eni": action.eni_id, "count": action.count, "why": action.reason}
    if isinstance(action, pool.CreateEni):
        return {"action": "create_eni", "subnet": action.subnet_id, "count": action.count, "why": action.reason}
    if isinstance(action, pool.ReleaseIps):
        return {"action": "release", "eni": action.eni_id, "ips": [str(ip) for ip in action.ips],
                "why": action.reason}
    return {"action": "delete_eni", "eni": action.eni_id, "why": action.reason}


class EniNode(abc.ABC):
    """What a node's IPAM does with ENIs in every mode: create and attach them (rolled back when the
    attach fails), delete them, bind and unbind IPs, with retries and back-off; the datastore; the
    listeners that see ENIs come and go (the data plane); the timers and the shutdown. A mode says how
    pods get IPs (`assign`, `release`), what a reconcile does, and which timers it keeps (`_timers`).

    Its attributes are slots: a simulated cluster has thousands of nodes, and an event reads one node's
    state from its object alone rather than from a separate attribute table as well."""

    __slots__ = ("_ambiguous_at", "_eni_seen_at", "_events", "_failures", "_ips_seen", "_lag_clock", "backoff_until",
                 "clock",
                 "draws", "limits", "listeners", "node", "poll_at", "resync_at", "retry", "shortfall", "store",
                 "subnets", "vpc")

    def __init__(
        self,
        node: str,
        *,
        vpc: VpcApi,
        limits: NodeLimits,
        subnets: Sequence[str],
        clock: Clock,
        store: Datastore | None = None,
        seed: int | str = 0,
        events: EventSink | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.node = node
        self.vpc = vpc
        self.limits = limits
        self.subnets = tuple(subnets)  # replaced, never changed in place: nodes alike may share one
        self.clock = clock
        self.store = store or Datastore(node)
        self.retry = retry or DEFAULT_RETRY
        self.draws = pool.first_draws(f"{seed}:{node}")  # the state of its random picks (`pool.next_draw`)
        self._events = events
        self.shortfall: str | None = None
        self.backoff_until: float | None = None
        self._failures = 0
        self.listeners: list[Callable[[EniChange, Eni], None]] = []
        self.resync_at: float | None = None  # when to re-sync with the VPC after an ambiguous answer
        self._ambiguous_at: float | None = None
        self._eni_seen_at: dict[str, float] = {}  # when this ipamd saw each ENI attached (see `_known_for`)
        self._ips_seen: bytes | None = None  # when it saw IPs bound, while that matters (`_learn_ips`)
        self._lag_clock = NEVER  # the latest time the two records above were stamped or asked at (`_lag_now`)
        self.poll_at: float | None = None  # a shortfall: look at the subnets (or retry pods) again then

    # -- what a mode says -------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def allocatable(self) -> int:
        """`tke.cloud.tencent.com/eni-ip` allocatable: how many pods the scheduler may place here."""

    @abc.abstractmethod
    def assign(self, pod: str) -> Allocation | None:
        """An IP for `pod` (the same one if it has one already); None if it cannot have one now."""

    @abc.abstractmethod
    def release(self, pod: str) -> Allocation | None:
        """The pod is gone: give its IP back as the mode does."""

    @abc.abstractmethod
    def reconcile(self) -> bool:
        """One step towards the mode's desired pool; True if something changed (call again until False)."""

    @abc.abstractmethod
    def _timers(self) -> tuple[float | None, ...]:
        """The mode's timed work, besides the back-off."""

    # -- shared by every mode ---------------------------------------------------------------------------
    def deadline(self) -> float | None:
        """When the node next has timed work; nothing happens before a back-off ends."""
        if self.backoff_until is not None:
            return self.backoff_until
        times = [t for t in self._timers() if t is not None]
        return min(times) if times else None

    def _awake(self, urgent: bool = False) -> bool:
        """The prologue of every reconcile: False while backing off, unless the work is `urgent` (a mode's
        rule that a back-off must not delay); an ended back-off and a due poll are cleared."""
        if self._backing_off() and not urgent:
            return False
        self.backoff_until = None
        if self.poll_at is not None and self.clock.now() >= self.poll_at:
            self.poll_at = None
        return True

    def shutdown(self) -> None:
        """The node is going away: release every pod, unbind every IP and delete every ENI.

        Best effort: an ENI the cloud will not unbind or detach even after the retries (throttled, say) is
        forgotten here and left in the VPC, where the instance's termination detaches it; an event says so.
        The node is gone either way, and one refusal does not keep the others from being cleaned up."""
        for pod in list(self.store.pods):
            self.release(pod)
        for eni in self.enis:
            try:
                if eni.ips:
                    self._give_back(eni, tuple(eni.ips))
                self._delete_eni(eni)
            except VpcError as err:
                self._forget_eni(eni)
                self._emit({"kind": "shutdown", "node": self.node, "left_in_vpc": eni.id, "error": str(err)})
        self.store.release_due = None
        self.store.commit()

    def why_no_ip(self) -> str:
        """Why a pod the scheduler placed here (its eni-ip allows it) has no IP yet, for its Pending reason."""
        if self._backing_off():
            return (f"node {self.node}'s IP pool is backing off after a failed cloud call; it tries again at "
                    f"t={self.backoff_until:g}")
        if self.shortfall:
            return self.shortfall
        return f"node {self.node} has no idle IP bound yet (bound {self.bound}, pods {self.pods})"

    @property
    def enis(self) -> list[Eni]:
        return list(self.store.enis.values())

    @property
    def bound(self) -> int:
        return self.store.tally.bound

    @property
    def capacity(self) -> int:
        """`tke.cloud.tencent.com/eni-ip` capacity: the most IPs the node can bind."""
        return self.limits.max_bindable

    @property
    def pods(self) -> int:
        return len(self.store.pods)

    def lookup(self, pod: str) -> Allocation | None:
        return self.store.pods.get(pod)

    # -- ENI lifecycle -------------------------------------------------------------------------------
    def _commit(self) -> None:
        """Checkpoint what the cloud just did. If the disk refuses, the datastore rolls back to what the
        disk holds, which misses that: a re-sync adopts it (or gives it back) once the disk works again."""
        try:
            self.store.commit()
        except OSError:
            self._schedule_resync()
            raise

    def _bind(self, eni: Eni, count: int = 0, ips: Sequence[IPv4Address] = ()) -> list[IPv4Address]:
        got = self._call(self.vpc.assign_private_ips, eni.id, count, tuple(ips))
        for ip in got:
            eni.bind(ip)
        self._learn_ips(got, self._lag_now())
        self._commit()
        return got

    def _create_eni(self, subnet_id: str) -> Eni:
        record = self._call(self.vpc.create_eni, self.node, subnet_id)
        try:
            record = self._call(self.vpc.attach_eni, record.id, self.node)
        except VpcError:
            if not self._try(self.vpc.delete_eni, record.id):
                self._schedule_resync()
            raise
        eni = self._adopt_record(record)
        self._commit()
        return eni

    def _adopt_record(self, record: EniRecord) -> Eni:
        eni = Eni(record.id, record.subnet_id, record.mac, record.primary_ip, record.device_index or 0,
                  self.store.next_seq)
        for ip in record.ips:
            eni.bind(ip)
        self.store.add_eni(eni)
        self._eni_seen_at[eni.id] = self._lag_now()
        self._tell(EniChange.ATTACHED, eni)
        return eni

    def _give_back(self, eni: Eni, ips: Sequence[IPv4Address]) -> None:
        """Unbind idle IPs for good, as the mode gives them back (to the subnet, here)."""
        self._unbind(eni, ips)

    def _unbind(self, eni: Eni, ips: Sequence[IPv4Address], retain: bool = False) -> None:
        """Unbind, idempotently: an IP the VPC no longer has on the ENI (an earlier call that timed out
        did happen) is simply gone."""
        try:
            self._call(self.vpc.unassign_private_ips, eni.id, tuple(ips), retain)
        except NotFound:
            for ip in ips:
                try:
                    self._call(self.vpc.unassign_private_ips, eni.id, (ip,), retain)
                except NotFound:
                    continue
        for ip in ips:
            eni.unbind(ip)
        self._forget_ips(ips, self._lag_now())
        self._commit()

    def _delete_eni(self, eni: Eni) -> None:
        with contextlib.suppress(NotFound):  # already detached: an earlier call that timed out did happen
            self._call(self.vpc.detach_eni, eni.id)
        self._forget_eni(eni)
        if not self._try(self.vpc.delete_eni, eni.id):
            self._schedule_resync()  # a detached orphan: the re-sync deletes it once the VPC lets it

    def _forget_eni(self, eni: Eni) -> None:
        """The ENI is off this node: out of the datastore (checkpointed) and told to the listeners."""
        self.store.remove_eni(eni.id)
        self._eni_seen_at.pop(eni.id, None)
        self._forget_ips(eni.ips, self._lag_now())
        self._commit()
        self._tell(EniChange.DETACHED, eni)

    def _schedule_resync(self) -> None:
        now = self.clock.now()
        self._ambiguous_at = now
        self.resync_at = now if self.resync_at is None else min(self.resync_at, now)

    def _call(self, fn, *args):
        delay = self.retry.base
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return fn(*args)
            except VpcError as err:
                if err.ambiguous:  # it may have happened: look again at what the VPC has, soon and later
                    self._schedule_resync()
                if not err.retryable or attempt == self.retry.attempts:
                    raise
                self.clock.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _try(self, fn, *args) -> bool:
        try:
            self._call(fn, *args)
        except VpcError:
            return False
        return True

    def maybe_resync(self) -> bool:
        """Re-sync with the VPC if an ambiguous answer asked for it, again and again until one finds the
        datastore and the VPC agreeing after the window. True if the datastore changed."""
        now = self.clock.now()
        if self.resync_at is None or now < self.resync_at:
            return False
        changed, settled = self.resync()
        quiet_since = self._ambiguous_at if self._ambiguous_at is not None else now
        if changed or not settled or now - quiet_since < self.retry.resync_window:
            self.resync_at = now + max(self.retry.resync_window / 4, 0.001)
        else:
            self.resync_at = self._ambiguous_at = None
        return changed

    def _lag_now(self) -> float:
        """The clock's time, for the records of when IPs and ENIs were seen, except that it never goes back:
        a wall clock stepped back would make pairs already dropped as stale young again, and a table of
        every IP would then answer otherwise. Seen through this, a step back only makes the lag last
        longer, the safe side (an IP is dropped later, never sooner)."""
        now = self.clock.now()
        if now < self._lag_clock:
            return self._lag_clock
        self._lag_clock = now
        return now

    def _known_for(self, what: IPv4Address | str, now: float) -> bool:
        """Known for longer than the describe lag (`resync_window`): a describe that does not show it
        is news, not lag. An IP or ENI this ipamd never saw come (read from a checkpoint, adopted with
        its ENI) is known for ever."""
        seen = self._eni_seen_at.get(what, NEVER) if isinstance(what, str) else self._ip_seen_at(what)
        return now - seen >= self.retry.resync_window

    # When this ipamd saw each IP bound matters only for the describe lag, some seconds, where a node binds
    # an IP every few minutes. The times are kept as (address, time) pairs packed in one bytes object,
    # newest last, which is dropped as a whole, unread, once its newest pair is older than the lag: every
    # pair in it answers "known" then, as no pair at all does. A dict of every bound IP (the earlier
    # design) was written on every bind and unbind: a cold table and a float each time in a cluster of
    # 10,000 nodes (cachegrind: 4 of 40 last-level misses per event). One bytes object is one cache line
    # for the few pairs it holds, with no objects of its own to free. The pairs are in time order, so the
    # last is the newest: their times come from `_lag_now`, which never goes back.
    def _learn_ips(self, ips: Sequence[IPv4Address], now: float) -> None:
        if ips:
            self._ips_seen = (self._fresh_ips_seen(now) or b"") + b"".join(SEEN.pack(int(ip), now) for ip in ips)

    def _forget_ips(self, ips: Iterable[IPv4Address], now: float) -> None:
        """Forget IPs unbound. `now` is the time the caller asks `_known_for` at: a record dropped as stale
        at a later time would answer "known" for a pair that is fresh at the caller's."""
        seen = self._fresh_ips_seen(now)
        if seen:
            gone = {int(ip) for ip in ips}
            self._ips_seen = b"".join(SEEN.pack(n, t) for n, t in SEEN.iter_unpack(seen) if n not in gone) or None

    def _fresh_ips_seen(self, now: float) -> bytes | None:
        """The pairs, or None once none is younger than the describe lag (then they are dropped)."""
        seen = self._ips_seen
        if seen is not None and now - _newest(seen) >= self.retry.resync_window:
            seen = self._ips_seen = None
        return seen

    def _ip_seen_at(self, ip: IPv4Address) -> float:
        n, at = int(ip), NEVER
        for m, t in SEEN.iter_unpack(self._ips_seen or b""):
            if m == n:
                at = t  # a later pair for it is newer (it was learned again)
        return at

    def resync(self, report: RecoveryReport | None = None) -> tuple[bool, bool]:
        """Adopt what the VPC has for this node that the datastore does not (ENIs attached here, IPs on
        them), delete ENIs created for this node but never attached, and drop idle IPs the VPC no longer
        has, but only those known for longer than the describe lag (`resync_window`): a describe may not
        show a fresh binding yet. A pod's IP is never dropped: it is bound again. An ENI of the datastore
        that the VPC shows detached (a detach that timed out did happen) is attached again if it has IPs,
        else forgotten and deleted. Returns (changed, settled): settled is False when the VPC could not
        be asked or refused a fix."""
        try:
            records = self._call(self.vpc.describe_enis, self.node)
        except VpcError:
            return False, False
        found, settled = False, True
        now = self._lag_now()
        report = report if report is not None else RecoveryReport()
        for rec in records:
            changed, ok = self._resync_eni(rec, now, report)
            found |= changed
            settled &= ok
        if found:
            self._commit()
        return found, settled

    def _resync_eni(self, rec: EniRecord, now: float, report: RecoveryReport) -> tuple[bool, bool]:
        """One ENI as the VPC describes it, against the datastore: (changed, settled)."""
        known = self.store.enis.get(rec.id)
        if rec.attached_to is None and known is None:
            if rec.node != self.node:
                return False, True
            if not self._try(self.vpc.delete_eni, rec.id):  # refused if it is attached after all
                return False, False
            self._emit({"kind": "resync", "node": self.node, "deleted_eni": rec.id})
            report.deleted_enis.append(rec.id)
            return True, True
        if rec.attached_to is None:
            if not self._known_for(rec.id, now):
                return False, True
            fixed = self._reattach_or_forget(known)
            return fixed, fixed
        if rec.attached_to != self.node:
            return False, True
        if known is None:
            self._adopt_record(rec)
            self._emit({"kind": "resync", "node": self.node, "adopted_eni": rec.id,
                        "ips": [str(ip) for ip in rec.ips]})
            report.adopted_enis.append(rec.id)
            report.adopted_ips += [str(ip) for ip in rec.ips]
            return True, True
        adopted = self._adopt_ips(known, rec, now, report)
        dropped, settled = self._drop_or_rebind_ips(known, rec, now, report)
        return adopted or dropped, settled

    def _adopt_ips(self, eni: Eni, rec: EniRecord, now: float, report: RecoveryReport) -> bool:
        """IPs the VPC shows on the ENI that the datastore misses (a bind that timed out did happen)."""
        new = [ip for ip in rec.ips if ip not in eni.ips]
        for ip in new:
            eni.bind(ip)
        self._learn_ips(new, now)
        if new:
            self._emit({"kind": "resync", "node": self.node, "eni": rec.id, "adopted_ips": [str(i) for i in new]})
            report.adopted_ips += [str(ip) for ip in new]
        return bool(new)

    def _drop_or_rebind_ips(self, eni: Eni, rec: EniRecord, now: float, report: RecoveryReport
                            ) -> tuple[bool, bool]:
        """IPs the datastore has had for longer than the describe lag and the VPC no longer shows: an idle
        one is dropped, a pod's bound again. Returns (changed, settled)."""
        changed, settled = False, True
        shown = set(rec.ips)
        for ip in [ip for ip in eni.ips if ip not in shown and self._known_for(ip, now)]:
            if eni.ips[ip] is None:
                eni.unbind(ip)
                self._forget_ips((ip,), now)  # the re-sync's time: its later questions use it too
                self._emit({"kind": "resync", "node": self.node, "eni": rec.id, "dropped_ip": str(ip)})
                report.dropped_ips.append(str(ip))
                changed = True
            elif self._try(self.vpc.assign_private_ips, eni.id, 0, (ip,)):
                self._emit({"kind": "resync", "node": self.node, "eni": rec.id, "rebound_ip": str(ip)})
                report.rebound_ips.append(str(ip))
            else:
                settled = False  # a pod's IP is never given up on uncertain news: look again later
        return changed, settled

    def _reattach_or_forget(self, eni: Eni) -> bool:
        """An ENI the datastore holds and the VPC has detached. With IPs on it (a pod's, or idle ones the
        pool may still want or must give back properly) it is attached again, and the data plane told;
        empty, it is forgotten and deleted. True if done."""
        if not eni.ips:
            self.store.remove_eni(eni.id)
            self._eni_seen_at.pop(eni.id, None)
            self._tell(EniChange.DETACHED, eni)
            self._emit({"kind": "resync", "node": self.node, "forgot_detached_eni": eni.id})
            if not self._try(self.vpc.delete_eni, eni.id):
                self._schedule_resync()  # a detached orphan now: a later re-sync deletes it
            return True
        try:
            record = self._call(self.vpc.attach_eni, eni.id, self.node)
        except VpcError:
            return False
        self._tell(EniChange.DETACHED, eni)  # attached again, maybe at another device index: a new link
        eni.device_index = record.device_index or 0
        self._tell(EniChange.ATTACHED, eni)
        self._emit({"kind": "resync", "node": self.node, "reattached_eni": eni.id, "ips": [str(i) for i in eni.ips]})
        return True

    def _backing_off(self) -> bool:
        return self.backoff_until is not None and self.clock.now() < self.backoff_until

    def _answered(self) -> None:
        """The cloud did the work: the next failure backs off from the start again."""
        self._failures = 0

    def _tell(self, change: EniChange, eni: Eni) -> None:
        for listener in self.listeners:
            listener(change, eni)

    def _back_off(self, err: VpcError) -> None:
        """The cloud failed the work: wait before trying it again (doubling, at most `max_backoff`)."""
        why = f"{type(err).__name__}: {err.message}"
        self._failures += 1
        # the doubling stops at the cap; past 1,024 failures in a row 2 ** failures would not fit a float
        wait = min(self.retry.base * 2 ** min(self._failures, MAX_DOUBLINGS), self.retry.max_backoff)
        self.backoff_until = self.clock.now() + wait
        self._emit({"kind": "backoff", "node": self.node, "seconds": wait, "reason": why})

    def _emit(self, event: dict) -> None:
        if self._events is not None:
            self._events({"t": self.clock.now(), **event})


class Ipamd(EniNode):
    """One node's ipamd in shared-ENI mode: the pool policy of `eni_core.pool`, carried out."""

    __slots__ = ("config",)

    def __init__(self, node: str, *, config: PoolConfig, **kw) -> None:
        super().__init__(node, **kw)
        self.config = config

    # -- views -------------------------------------------------------------------------------------
    @property
    def allocatable(self) -> int:
        """`tke.cloud.tencent.com/eni-ip` allocatable: the IPs bound to the node."""
        return self.bound

    def _timers(self) -> tuple[float | None, ...]:
        return self.store.release_due, self.poll_at, self.resync_at

    # -- pods ---------------------------------------------------------------------------------------
    def assign(self, pod: str) -> Allocation | None:
        """An IP for `pod` from the pool (the same one if it has one already); None if none is idle."""
        if pod in self.store.pods:
            return self.store.pods[pod]
        if self.store.tally.idle <= 0:  # no idle IP: no pick, and no draw used up
            return None
        self.draws, draw = pool.next_draw(self.draws)
        choice = pool.choose_pod_ip(self.store.enis.values(), draw)
        if choice is None:
            return None
        eni, ip = choice
        alloc = self.store.allocate(pod, eni, ip)
        self.store.commit()
        return alloc

    def release(self, pod: str) -> Allocation | None:
        """Return a deleted pod's IP to the node's pool (not to the VPC)."""
        alloc = self.store.free(pod)
        if alloc is not None:
            self.store.commit()
        return alloc

    # -- the pool -----------------------------------------------------------------------------------
    def reconcile(self) -> bool:
        """Plan once and carry the plan out. True if the pool changed (call again until False)."""
        # a back-off paces retries, but IPs above max bindable go at once (see eni_core.pool)
        store = self.store
        if not self._awake(urgent=pool.over_max_bindable(store.enis.values(), self.limits, store.tally)):
            return False
        now = self.clock.now()
        changed = self.maybe_resync()
        try:
            plan = pool.plan(
                store.enis.values(),  # a view: a plan within the bounds reads the tally, not the ENIs
                tally=store.tally,
                pods=self.pods,
                node_subnets=self.subnets,
                subnet_free=lambda: self._call(self.vpc.describe_subnets, self.subnets),
                limits=self.limits,
                config=self.config,
                release_due=self.store.release_due,
                now=now,
            )
            if plan.release_due != self.store.release_due:
                self.store.release_due = plan.release_due
                self.store.commit()
            for action in plan.actions:
                self._emit({"kind": "pool", "node": self.node, **describe(action)})
                changed |= self._execute(action)
        except VpcError as err:
            self._back_off(err)
            return changed
        self._answered()
        self._set_shortfall(plan.shortfall)
        if plan.shortfall and not changed:
            self.poll_at = now + self.retry.shortfall_poll
        return changed

    def _execute(self, action: pool.Action) -> bool:
        if isinstance(action, pool.BindIps):
            self._bind(self.store.enis[action.eni_id], action.count)
            return True
        if isinstance(action, pool.CreateEni):
            eni = self._create_eni(action.subnet_id)
            self._bind(eni, action.count)
            return True
        if isinstance(action, pool.ReleaseIps):
            self._unbind(self.store.enis[action.eni_id], action.ips)
            return True
        if isinstance(action, pool.DeleteEni):
            self._delete_eni(self.store.enis[action.eni_id])
            return True
        raise TypeError(f"unknown action {action!r}")

    def _set_shortfall(self, shortfall: str | None) -> None:
        if shortfall != self.shortfall:
            self.shortfall = shortfall
            self._emit({"kind": "condition", "node": self.node, "type": "IPPoolShortfall",
                        "status": shortfall is not None, "message": shortfall or "the pool is within bounds"})

    # -- restart ----------------------------------------------------------------------------------
    def recover(self) -> RecoveryReport:
        """Load the checkpoint and re-sync with the VPC: adopt what it has bound to this node that the
        checkpoint missed, delete ENIs created for this node but never attached, and keep every pod's IP.
        Describes lag, so nothing is dropped for being absent, and the re-sync goes on for a window."""
        report = RecoveryReport()
        self.store.restore()
        now = self._lag_now()  # describes lag: what the checkpoint knows is judged after the window
        for eni in self.store.enis.values():
            self._eni_seen_at[eni.id] = now
            self._learn_ips(tuple(eni.ips), now)
        self._schedule_resync()
        self.resync(report)
        self._emit({"kind": "recovered", "node": self.node, **report.to_dict()})
        return report
