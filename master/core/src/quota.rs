//! Quota in an allocation pass, on Mesos's semantics (1.9+): a role's *limit* caps what it holds
//! (used + offered + launching) in each limited quantity, so an offer to it is cut to the room
//! left; its *guarantee* is offered to it before anything is offered to other roles, and what
//! unmet guarantees need is held back from everyone else (the "headroom": the unreserved free
//! resources of the cluster never drop below the sum of the unmet guarantees because of an
//! offer to another role).
//!
//! [`QuotaBook`] keeps these numbers for one pass, by the allocator's role index, and is updated
//! with every offer the pass makes. Reserved resources are the reserving role's alone: they
//! count against its limit and toward its guarantee but are not part of the headroom.
//!
//! An offer cut to nothing in cpus or memory while the agent has some is not made (a task needs
//! both), so a role at its cpu limit is offered nothing more.

use crate::allocator::{ClusterView, QuotaView};
use proto::Resources;
use std::collections::BTreeMap;

/// Cpus, memory, disk.
type Scalars = [u64; 3];

fn scalars(r: &Resources) -> Scalars {
    [r.cpus_milli, r.mem_bytes, r.disk_bytes]
}

fn add(a: Scalars, b: Scalars) -> Scalars {
    [
        a[0].saturating_add(b[0]),
        a[1].saturating_add(b[1]),
        a[2].saturating_add(b[2]),
    ]
}

fn sub(a: Scalars, b: Scalars) -> Scalars {
    [
        a[0].saturating_sub(b[0]),
        a[1].saturating_sub(b[1]),
        a[2].saturating_sub(b[2]),
    ]
}

struct RoleQuota {
    guarantee: Scalars,
    limit: [Option<u64>; 3],
    consumed: Scalars,
}

impl RoleQuota {
    fn unmet(&self) -> Scalars {
        sub(self.guarantee, self.consumed)
    }
}

/// Quota accounting of one allocation pass.
pub(crate) struct QuotaBook {
    /// By the pass's role index; `None` for roles without quota.
    roles: Vec<Option<RoleQuota>>,
    /// The sum of every role's unmet guarantee, those with no framework in the pass included
    /// (they still get headroom).
    unmet_total: Scalars,
    /// Unreserved free resources of the agents in the view, less what this pass offered.
    free: Scalars,
    active: bool,
}

impl QuotaBook {
    /// The book of a pass whose roles are `role_index` (name to index, `n` roles).
    pub(crate) fn new(
        view: &ClusterView<'_>,
        role_index: &BTreeMap<&str, usize>,
        n: usize,
    ) -> Self {
        let mut book = QuotaBook {
            roles: (0..n).map(|_| None).collect(),
            unmet_total: [0; 3],
            free: [0; 3],
            active: !view.quotas.is_empty(),
        };
        if !book.active {
            return book;
        }
        for a in &view.agents {
            book.free = add(book.free, scalars(&a.available));
        }
        for QuotaView {
            role,
            quota,
            consumed,
        } in &view.quotas
        {
            let rq = RoleQuota {
                guarantee: scalars(&quota.guarantee),
                limit: [
                    quota.limit.cpus_milli,
                    quota.limit.mem_bytes,
                    quota.limit.disk_bytes,
                ],
                consumed: scalars(consumed),
            };
            book.unmet_total = add(book.unmet_total, rq.unmet());
            if let Some(slot) = role_index.get(role).and_then(|&i| book.roles.get_mut(i)) {
                *slot = Some(rq);
            }
        }
        book
    }

    /// Whether any role has a quota (else every offer is the whole of what is free).
    pub(crate) fn active(&self) -> bool {
        self.active
    }

    /// Whether role `ri` has a guarantee not yet met in some quantity.
    pub(crate) fn unmet(&self, ri: usize) -> bool {
        self.role(ri).is_some_and(|r| r.unmet() != [0; 3])
    }

    fn role(&self, ri: usize) -> Option<&RoleQuota> {
        self.roles.get(ri).and_then(Option::as_ref)
    }

    /// The sum of the unmet guarantees of every role but `ri`.
    fn unmet_of_others(&self, ri: usize) -> Scalars {
        match self.role(ri) {
            Some(r) => sub(self.unmet_total, r.unmet()),
            None => self.unmet_total,
        }
    }

    /// What role `ri` may be offered of `available`: cut to its limit; in the guarantee stage,
    /// to its own unmet guarantee in each guaranteed quantity (the rest is shared by DRF
    /// afterwards); after it, for unreserved resources, to what leaves the other roles' unmet
    /// guarantees free. `None` when that is nothing useful (empty, or no cpus or no memory
    /// where the agent has them). The ports (never quota'd) go with the offer whole.
    pub(crate) fn cut(
        &self,
        ri: usize,
        available: &Resources,
        reserved: bool,
        guarantee_stage: bool,
    ) -> Option<Resources> {
        let offer = self.cut_scalars(ri, available, reserved, guarantee_stage)?;
        Some(Resources {
            cpus_milli: offer[0],
            mem_bytes: offer[1],
            disk_bytes: offer[2],
            ports: available.ports.clone(),
        })
    }

    /// Whether [`QuotaBook::cut`] offers role `ri` anything (without building the offer).
    pub(crate) fn can_offer(
        &self,
        ri: usize,
        available: &Resources,
        guarantee_stage: bool,
    ) -> bool {
        self.cut_scalars(ri, available, false, guarantee_stage)
            .is_some()
    }

    fn cut_scalars(
        &self,
        ri: usize,
        available: &Resources,
        reserved: bool,
        guarantee_stage: bool,
    ) -> Option<Scalars> {
        let avail = scalars(available);
        let mut offer = avail;
        if let Some(r) = self.role(ri) {
            let unmet = r.unmet();
            for q in 0..3 {
                if let Some(l) = r.limit[q] {
                    offer[q] = offer[q].min(l.saturating_sub(r.consumed[q]));
                }
                if guarantee_stage && r.guarantee[q] > 0 {
                    offer[q] = offer[q].min(unmet[q]);
                }
            }
        }
        // Headroom holds back from offers beyond guarantees only: in the guarantee stage the
        // roles short of theirs take turns (DRF order), as in Mesos, so that guarantees summing
        // to more than is free still get what there is.
        if !reserved && !guarantee_stage {
            let spare = sub(self.free, self.unmet_of_others(ri));
            for q in 0..3 {
                offer[q] = offer[q].min(spare[q]);
            }
        }
        let useful =
            offer != [0; 3] && (avail[0] == 0 || offer[0] > 0) && (avail[1] == 0 || offer[1] > 0);
        useful.then_some(offer)
    }

    /// Books an offer of `offer` to role `ri`.
    pub(crate) fn record(&mut self, ri: usize, offer: &Resources, reserved: bool) {
        let s = scalars(offer);
        if !reserved {
            self.free = sub(self.free, s);
        }
        if let Some(Some(r)) = self.roles.get_mut(ri) {
            let before = r.unmet();
            r.consumed = add(r.consumed, s);
            let met = sub(before, r.unmet());
            self.unmet_total = sub(self.unmet_total, met);
        }
    }
}
