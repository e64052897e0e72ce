"""Static-IP mode: a cluster-level pool of claims, and nodes whose IPs are bound on demand.

The seed's "Static IP address mode", and what the product documents around it: the network component
records a claim named after the pod (a VpcIPClaim) bound to an address (a VpcIP).
- New nodes get no ENI and no IP in advance; a pod's IP is bound when the pod is created, on the node's
  ENI with the most bound IPs that still has room; else on a new ENI in the node's subnet with the most
  available addresses; when no subnet can serve, the pod stays Pending and the node says why.
- A non-static pod's claim goes with the pod: its IP is unbound and returned to the VPC subnet.
- A static pod's claim and IP outlive the pod, retained in the VPC; a pod with the same namespace/name,
  on any node, gets the same IP back (bound on an ENI in that IP's subnet). No other name ever does.
- A pod without the static annotation that takes its name's retained IP gives it to the subnet when it goes.
- Reclaim: after `claim_expired_duration` seconds without a pod of its name (None: never, the product
  default; a pod of that name waiting Pending stops the clock, as it is the pod the IP is kept for); by
  hand, refused while the pod exists; by cascade, for every claim of a deleted workload.
- A deleted node's ENIs are released; static claims keep their addresses, idle ones waiting on its ENIs too.
"""
from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from eni_core.datastore import Allocation
from eni_core.ipamd import EniNode
from eni_core.model import Eni, NodeLimits
from eni_core.pool import ENI_PRIMARY, choose_subnet, no_subnet_for_new_eni
from eni_core.ports import NotFound, VpcError
from eni_core.rpc import REFUSED

__all__ = ["MIN_EXPIRY", "Claim", "ClaimError", "EniChoice", "StaticIpam", "StaticNode", "check_expiry", "choose_eni"]

MIN_EXPIRY = 300.0
RELEASE_RETRY = (1.0, 60.0)  # seconds: first wait, and longest, before a refused release is tried again


class ClaimError(Exception):
    """A claim operation that cannot be done as asked; the message says why and what to do."""

    rpc_code = REFUSED


@dataclass
class Claim:
    name: str  # the pod's namespace/name
    ip: IPv4Address
    subnet: str
    static: bool
    owner: str | None = None  # statefulset/NS/NAME
    node: str | None = None  # where the IP is bound now; None: retained in the VPC, on no ENI
    released_at: float | None = None  # when its pod went
    seq: int = field(default=0, compare=False)  # the order claims were made in (StaticIpam.add)

    def expires_at(self, duration: float | None) -> float | None:
        if duration is None or self.released_at is None:
            return None
        return self.released_at + duration


@dataclass(frozen=True)
class EniChoice:
    eni_id: str | None = None  # bind on this ENI ...
    new_subnet: str | None = None  # ... or on a new ENI in this subnet
    reason: str | None = None  # ... or neither, and why


def choose_eni(enis: Sequence[Eni], node_subnets: Sequence[str], subnet_free: Mapping[str, int],
               limits: NodeLimits, subnet: str | None = None) -> EniChoice:
    """Where a pod's IP goes: least ENIs, the ENI with the most bound IPs that has room (ties: the
    older); else a new ENI in the subnet with the most available addresses (ties: listed first). With
    `subnet` (a retained IP's), only that subnet will do.

    Examples
    --------
    >>> choose_eni([], ["subnet-a", "subnet-b"], {"subnet-a": 10, "subnet-b": 40}, NodeLimits(2, 4))
    EniChoice(eni_id=None, new_subnet='subnet-b', reason=None)
    """
    candidates = [e for e in enis if len(e.ips) < limits.ips_per_eni and (subnet is None or e.subnet_id == subnet)
                  and (subnet is not None or subnet_free.get(e.subnet_id, 0) > 0)]
    if candidates:
        return EniChoice(eni_id=min(candidates, key=lambda e: (-len(e.ips), e.seq)).id)
    if len(enis) >= limits.max_enis:
        return EniChoice(reason=f"all {limits.max_enis} ENIs are bound and have no room"
                         + (f" in {subnet}" if subnet else ""))
    if subnet is not None:
        if subnet not in node_subnets:
            return EniChoice(reason=f"the static IP is in {subnet}, which this node cannot use "
                             f"(its subnets: {', '.join(node_subnets)})")
        if subnet_free.get(subnet, 0) < ENI_PRIMARY:  # the claim's IP is retained: only the primary is new
            return EniChoice(reason=f"{subnet} has no address left for a new ENI")
        return EniChoice(new_subnet=subnet)
    new_subnet = choose_subnet(node_subnets, subnet_free)
    if new_subnet is None:
        return EniChoice(reason=no_subnet_for_new_eni(node_subnets, subnet_free))
    return EniChoice(new_subnet=new_subnet)


def check_expiry(expiry: float | None) -> float | None:
    """`claim_expired_duration`: None (never, the product default) or at least MIN_EXPIRY seconds."""
    if expiry is not None and expiry < MIN_EXPIRY:
        raise ClaimError(f"claim_expired_duration must be at least {MIN_EXPIRY:g} seconds (or None: never), "
                         f"not {expiry:g}")
    return expiry


class StaticIpam:
    """The cluster-level pool: every claim, the expiry clock, reclaim by hand and by cascade."""

    def __init__(self, vpc, clock, expiry: float | None = None, events=None) -> None:
        self.vpc, self.clock, self.expiry, self._events = vpc, clock, check_expiry(expiry), events
        self.claims: dict[str, Claim] = {}  # change them with add, bind, retain and drop: they keep the indexes
        # the indexes, so that no timer or reconcile walks every claim (a cluster may hold 100,000):
        self._retained: dict[IPv4Address, Claim] = {}  # the claims on no node, by address
        self._expiries: list[tuple[float, int, str]] = []  # (expires_at, seq, name) of retained claims, a heap
        self._seq = 0
        self.gone: dict[str, str] = {}  # claims freed (expired, reclaimed) -> why: a later manual reclaim is moot
        self.declared: dict[str, tuple[bool, str | None]] = {}  # pod -> (static, owner), set at creation
        self.static_names: set[str] = set()  # every static pod declared, bound or not
        self.releasing: set[IPv4Address] = set()  # freed claims' addresses the VPC has not taken back yet
        self._release_at: float | None = None
        self._release_wait = RELEASE_RETRY[0]

    # -- the claims, and their indexes ----------------------------------------------------------------
    def add(self, claim: Claim) -> Claim:
        self._seq += 1
        claim.seq = self._seq
        self.claims[claim.name] = claim
        if claim.node is None:
            self._retained[claim.ip] = claim
        return claim

    def bind(self, claim: Claim, node: str) -> None:
        """The claim's address is bound on `node` (its pod runs there)."""
        claim.node, claim.released_at = node, None
        if self._retained.get(claim.ip) is claim:
            del self._retained[claim.ip]

    def retain(self, claim: Claim, now: float) -> None:
        """The claim's pod went at `now`: its address is retained in the VPC, and expires in time."""
        claim.node, claim.released_at = None, now
        self._retained[claim.ip] = claim
        if self.expiry is not None:
            heapq.heappush(self._expiries, (now + self.expiry, claim.seq, claim.name))

    def drop(self, name: str) -> Claim:
        claim = self.claims.pop(name)
        if self._retained.get(claim.ip) is claim:
            del self._retained[claim.ip]
        return claim

    def is_retained(self, ip: IPv4Address) -> bool:
        """Whether a claim on no node holds `ip`."""
        return ip in self._retained

    def _next_expiry(self) -> tuple[float, int, str] | None:
        """The heap's first entry that still stands (a claim bound again, dropped or retained since is
        skipped, and popped)."""
        heap = self._expiries
        while heap:
            at, seq, name = heap[0]
            claim = self.claims.get(name)
            if claim is not None and claim.seq == seq and claim.expires_at(self.expiry) == at:
                return heap[0]
            heapq.heappop(heap)
        return None

    def declare(self, pod: str, static: bool, owner: str | None) -> None:
        """A pod is created. A retained claim of its name is its address: the claim's expiry clock stops
        while the pod exists, Pending or not (it waits for this pod, as a manual reclaim does)."""
        self.declared[pod] = (static, owner)
        if static:
            self.static_names.add(pod)
            self.gone.pop(pod, None)  # a static pod of the name again: why its last claim went answers no more
        claim = self.claims.get(pod)
        if claim is not None and claim.node is None:
            claim.released_at = None  # its entry in the expiry heap no longer stands

    def undeclare(self, pod: str) -> None:
        """A pod that never got its address is deleted: a retained claim of its name is without its pod
        again, and its expiry clock starts over."""
        self.declared.pop(pod, None)
        claim = self.claims.get(pod)
        if claim is not None and claim.node is None and claim.released_at is None:
            self.retain(claim, self.clock.now())

    def _emit(self, event: dict) -> None:
        if self._events is not None:
            self._events({"t": self.clock.now(), "kind": "claim", **event})

    def _free(self, claim: Claim, why: str) -> None:
        """The claim goes at once; its address goes back to the subnet now, or on a later try if the VPC
        refuses for now (a throttle, an internal error, a timeout)."""
        self.drop(claim.name)
        self.gone[claim.name] = why
        self._emit({"claim": claim.name, "event": "Reclaimed", "ip": str(claim.ip), "why": why})
        self.releasing.add(claim.ip)
        self._release()

    def _release(self) -> bool:
        """Give every freed claim's address back, one call each. NotFound means the VPC keeps it for no claim
        (a node still holds it idle, and gives it to the subnet now that no claim wants it; or a timed-out
        release did happen): done. True if any address went back."""
        freed = False
        for ip in sorted(self.releasing):
            try:
                self.vpc.release_retained([ip])
                freed = True
            except NotFound:
                pass
            except VpcError as err:
                if not err.retryable:
                    raise
                self._release_at = self.clock.now() + self._release_wait
                self._release_wait = min(2 * self._release_wait, RELEASE_RETRY[1])
                return freed
            self.releasing.discard(ip)
        self._release_at, self._release_wait = None, RELEASE_RETRY[0]
        return freed

    def reclaim(self, name: str, pod_present: bool) -> Claim | None:
        """Manual reclaim (`kubectl delete vipc NAME`): refused while the pod exists. None if the claim
        expired already."""
        claim = self.claims.get(name)
        if claim is None and name in self.gone:
            self._emit({"claim": name, "event": "AlreadyReclaimed", "why": f"it went already ({self.gone[name]})"})
            return None
        if claim is None and name in self.static_names:  # its pods were refused an address (a cloud fault)
            self._emit({"claim": name, "event": "AlreadyReclaimed", "why": "its pod never kept an address"})
            return None
        if claim is None:
            raise ClaimError(f"no claim named {name!r}; `enilab claims list` shows the claims")
        if pod_present or claim.node is not None:
            raise ClaimError(f"pod {name} still exists and holds {claim.ip}; delete the pod first")
        self._free(claim, "reclaimed by hand")
        return claim

    def delete_workload(self, owner: str) -> list[Claim]:
        """Cascade reclaim: every retained claim of the workload (its pods are deleted first)."""
        gone = [c for c in self.claims.values() if c.owner == owner and c.node is None]
        for claim in gone:
            self._free(claim, f"workload {owner} deleted")
        return gone

    def expire(self) -> bool:
        """Free the claims due to expire, and try again the releases the VPC refused. True if any freed."""
        now = self.clock.now()
        retried = self._release() if self._release_at is not None and self._release_at <= now else False
        due: dict[str, Claim] = {}  # a claim retained twice at one instant has two entries: one is due
        while (first := self._next_expiry()) is not None and first[0] <= now:
            heapq.heappop(self._expiries)
            due[first[2]] = self.claims[first[2]]
        for claim in sorted(due.values(), key=lambda c: c.seq):  # in the order the claims were made
            self._free(claim, f"expired: {self.expiry:g} s without its pod")
        return bool(due) or retried

    def deadline(self) -> float | None:
        """When `expire` has work next: a claim's expiry, or the next try of a refused release."""
        first = self._next_expiry()
        times = [t for t in (first[0] if first else None, self._release_at) if t is not None]
        return min(times) if times else None

    def view(self) -> dict[str, dict]:
        return {c.name: {"ip": str(c.ip), "subnet": c.subnet, "pod_present": c.node is not None,
                         "expires_at": c.expires_at(self.expiry), "static": c.static, "owner": c.owner,
                         "node": c.node}
                for c in sorted(self.claims.values(), key=lambda c: c.name)}


class StaticNode(EniNode):
    """A node in static-IP mode: the same face as the shared-ENI ipamd, with IPs bound on demand."""

    __slots__ = ("ipam",)

    def __init__(self, node: str, *, ipam: StaticIpam, **kw) -> None:
        super().__init__(node, **kw)
        self.ipam = ipam

    @property
    def allocatable(self) -> int:
        """IPs are bound on demand, so eni-ip allocatable is what the node can still bind."""
        return self.capacity

    def _timers(self) -> tuple[float | None, ...]:
        """Re-sync and the retry of pods that found no IP; the claims' expiry is the cluster-level pool's."""
        return self.resync_at, self.poll_at

    def assign(self, pod: str) -> Allocation | None:
        if pod in self.store.pods:
            return self.store.pods[pod]
        claim = self.ipam.claims.get(pod)
        if claim is not None and claim.node not in (None, self.node):
            self.shortfall = f"{pod}'s address {claim.ip} is still bound on {claim.node}"
            return None
        if claim is not None:  # its address may still sit idle on one of this node's ENIs
            eni = next((e for e in self.enis if e.ips.get(claim.ip, "absent") is None), None)
            if eni is not None:
                self.ipam.bind(claim, self.node)
                alloc = self.store.allocate(pod, eni, claim.ip)
                self.store.commit()
                return alloc
        if self._backing_off():
            return None  # the cloud failed just now: the pod waits for the back-off, like the node's other work
        try:
            free = self._call(self.vpc.describe_subnets, self.subnets)
            choice = choose_eni(self.enis, self.subnets, free, self.limits, claim.subnet if claim else None)
            if choice.reason:  # the cloud answered: no subnet or ENI can serve (not a failure to back off from)
                self._answered()
                self.shortfall = f"{pod} cannot get an IP here: {choice.reason}"
                self.poll_at = self.clock.now() + self.retry.shortfall_poll
                self._emit({"kind": "condition", "node": self.node, "type": "IPPoolShortfall", "status": True,
                            "message": self.shortfall})
                return None
            eni = self.store.enis[choice.eni_id] if choice.eni_id else self._create_eni(choice.new_subnet)
            ip = self._bind(eni, 0 if claim else 1, (claim.ip,) if claim else ())[0]
        except VpcError as err:
            self._back_off(err)
            return None
        self._answered()
        self.shortfall = self.poll_at = None
        if claim is None:
            static, owner = self.ipam.declared.get(pod, (False, None))
            claim = self.ipam.add(Claim(pod, ip, eni.subnet_id, static, owner))
        self.ipam.bind(claim, self.node)
        alloc = self.store.allocate(pod, eni, ip)
        self.store.commit()
        self._emit({"kind": "claim", "claim": pod, "event": "Bound", "ip": str(ip), "node": self.node,
                    "eni": eni.id, "static": claim.static})
        return alloc

    def release(self, pod: str) -> Allocation | None:
        alloc = self.store.free(pod)
        if alloc is None:
            return None
        claim = self.ipam.claims.get(pod)
        # the pod's own annotation decides (a pod without one may have taken its name's static claim)
        keep = claim is not None and self.ipam.declared.get(pod, (claim.static, None))[0]
        eni = self.store.enis[alloc.eni_id]
        if claim is not None:  # the pod is gone whatever the cloud says next
            if keep:
                self.ipam.retain(claim, self.clock.now())
                self._emit({"claim": pod, "kind": "claim", "event": "Retained", "ip": str(alloc.ip)})
            else:
                self.ipam.drop(pod)
        self.ipam.declared.pop(pod, None)  # the claim, if kept, remembers what the pod was
        self.store.commit()
        try:
            self._unbind(eni, (alloc.ip,), keep)
            if not eni.ips:  # least ENIs: an ENI with no IP left goes
                self._delete_eni(eni)
        except VpcError as err:  # the IP stays idle on the ENI; reconcile gives it back later
            self._back_off(err)
        else:
            self._answered()
        return alloc

    def _give_back(self, eni: Eni, ips: Sequence[IPv4Address]) -> None:
        """Unbind idle IPs: a claim's stays retained in the VPC for its claim, any other goes to the subnet."""
        for retain in (True, False):
            part = [ip for ip in ips if self.ipam.is_retained(ip) == retain]
            if part:
                self._unbind(eni, part, retain)

    def reconcile(self) -> bool:
        """Nothing is pre-bound in static mode: the node waits out a back-off, re-syncs after an ambiguous
        answer, and gives back any idle IP that brought (to its claim if it is a claim's, else to the
        subnet)."""
        if not self._awake():  # a due poll is cleared: the cluster's scheduler tries the Pending pods again
            return False
        changed = self.maybe_resync()
        try:
            for eni in self.enis:
                idle = eni.idle_ips()
                if idle:
                    self._give_back(eni, idle)
                    changed = True
                if not eni.ips:
                    self._delete_eni(eni)
                    changed = True
        except VpcError as err:
            self._back_off(err)
        else:
            if changed:  # the cloud did work; a reconcile with none to do says nothing of it
                self._answered()
        return changed
