//! Allocation policies behind one trait. An allocator sees a read-only [`ClusterView`] (free
//! resources per allocatable agent, each framework's allocation per role, filters, suppression)
//! and returns which framework gets each agent's free resources. It holds no cluster state of its
//! own, so it can be swapped in config and benchmarked on a synthetic view.
//!
//! Both policies here follow the Mesos hierarchical allocator: for each agent, pick a role, then
//! a framework within that role, and give it *all* the agent's free resources (one coalesced
//! offer). Offered resources count toward the shares at once, so the next agent of the same pass
//! goes to whoever is now furthest behind.

use crate::config::AllocatorKind;
use crate::quota::QuotaBook;
use proto::{FrameworkId, PortRange, Resources};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// "Do not offer `refused` (or less) of this agent to this framework before `until`."
/// Matches Mesos: the filter does not apply when the agent has more free than was refused.
///
/// The refused quantities are held inline, with the first port range (offers mostly carry
/// one), so that checking an agent's filters reads only its own filter map.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    pub until: Instant,
    cpus_milli: u64,
    mem_bytes: u64,
    disk_bytes: u64,
    first_ports: Option<PortRange>,
    more_ports: Vec<PortRange>,
}

impl Filter {
    pub fn new(until: Instant, refused: Resources) -> Filter {
        let mut ports = refused.ports.into_iter();
        let first_ports = ports.next();
        Filter {
            until,
            cpus_milli: refused.cpus_milli,
            mem_bytes: refused.mem_bytes,
            disk_bytes: refused.disk_bytes,
            first_ports,
            more_ports: ports.collect(),
        }
    }

    /// True while the filter lasts and `available` fits in what was refused
    /// (`refused.contains(available)`).
    pub fn blocks(&self, now: Instant, available: &Resources) -> bool {
        now < self.until
            && self.cpus_milli >= available.cpus_milli
            && self.mem_bytes >= available.mem_bytes
            && self.disk_bytes >= available.disk_bytes
            && available.ports.iter().all(|r| {
                r.is_empty()
                    || self
                        .first_ports
                        .iter()
                        .chain(&self.more_ports)
                        .any(|p| p.begin <= r.begin && r.end <= p.end)
            })
    }
}

/// An agent's refusal filters, by framework index: one vector sorted by index, so that the
/// frameworks an allocation pass checks for one agent are found by binary search in one small
/// contiguous block.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentFilters {
    sorted: Vec<(u32, Filter)>,
}

impl AgentFilters {
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    pub fn get(&self, framework: u32) -> Option<&Filter> {
        filter_of(&self.sorted, framework)
    }

    /// The (framework index, filter) pairs, sorted by index: what the allocation view carries.
    pub fn as_slice(&self) -> &[(u32, Filter)] {
        &self.sorted
    }

    /// Sets the framework's filter (replacing any).
    pub fn insert(&mut self, framework: u32, filter: Filter) {
        match self.sorted.binary_search_by_key(&framework, |(k, _)| *k) {
            Ok(i) => self.sorted[i].1 = filter,
            Err(i) => self.sorted.insert(i, (framework, filter)),
        }
    }

    pub fn remove(&mut self, framework: u32) -> Option<Filter> {
        let i = self
            .sorted
            .binary_search_by_key(&framework, |(k, _)| *k)
            .ok()?;
        Some(self.sorted.remove(i).1)
    }

    /// (framework index, filter) in index order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Filter)> {
        self.sorted.iter().map(|(k, f)| (*k, f))
    }
}

/// The filter of `framework` in `filters` (sorted by framework index).
pub fn filter_of(filters: &[(u32, Filter)], framework: u32) -> Option<&Filter> {
    let i = filters.binary_search_by_key(&framework, |(k, _)| *k).ok()?;
    filters.get(i).map(|(_, f)| f)
}

/// What the allocator sees.
pub struct ClusterView<'a> {
    /// Total resources of all reachable agents: the denominator of every share.
    pub total: Resources,
    /// Agents whose free resources may be offered (active, connected), with what is free, in
    /// agent id order.
    pub agents: Vec<AgentView<'a>>,
    /// Connected frameworks that want offers in at least one role.
    pub frameworks: Vec<FrameworkView<'a>>,
    pub role_weights: &'a BTreeMap<String, f64>,
    /// An agent is offered only if its free resources meet one non-zero quantity of this.
    pub min_allocatable: &'a Resources,
    /// Roles with a quota (`quota.rs`), each with what all its frameworks hold (used, offered,
    /// launching); empty when no role has one.
    pub quotas: Vec<QuotaView<'a>>,
}

/// A role's quota and what the role holds.
pub struct QuotaView<'a> {
    pub role: &'a str,
    pub quota: &'a proto::Quota,
    pub consumed: Resources,
}

pub struct AgentView<'a> {
    /// The agent's dense index in the master.
    pub ix: u32,
    pub available: Resources,
    /// Free resources reserved for a role on this agent, by role (empty on most agents);
    /// `available` is the unreserved part.
    pub reserved: Vec<(&'a str, Resources)>,
    /// The agent's filters ([`AgentFilters::as_slice`]), copied into the view so that checking
    /// them reads only the filters themselves.
    pub filters: &'a [(u32, Filter)],
}

pub struct FrameworkView<'a> {
    pub id: &'a FrameworkId,
    /// The framework's dense index in the master (the key of [`AgentFilters`]).
    pub ix: u32,
    pub roles: Vec<FrameworkRole<'a>>,
}

pub struct FrameworkRole<'a> {
    pub role: &'a str,
    /// Used + offered + launching in this role.
    pub allocated: Resources,
    /// False when the framework suppressed offers for this role.
    pub wants_offers: bool,
}

/// One decision: `framework` (index into `view.frameworks`) is offered resources of `agent`
/// (index into `view.agents`) in its role `role` (index into that framework's `roles`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub framework: usize,
    pub agent: usize,
    pub role: usize,
    /// `None`: all the agent's unreserved free resources; else this part of them (cut to a
    /// quota), or of the role's reservation on the agent when `reserved`.
    pub resources: Option<Resources>,
    pub reserved: bool,
}

pub trait Allocator: Send {
    fn name(&self) -> &'static str;
    fn allocate(&mut self, now: Instant, view: &ClusterView<'_>) -> Vec<Allocation>;
}

/// Builds the allocator config asks for.
pub fn from_kind(kind: AllocatorKind) -> Box<dyn Allocator> {
    match kind {
        AllocatorKind::Drf => Box::new(DrfAllocator::default()),
        AllocatorKind::StrictPriority => Box::new(StrictPriorityAllocator::default()),
    }
}

/// The weight of a role: configured, else 1.0.
pub fn role_weight(weights: &BTreeMap<String, f64>, role: &str) -> f64 {
    match weights.get(role) {
        Some(w) if w.is_finite() && *w > 0.0 => *w,
        _ => 1.0,
    }
}

/// Dominant share of `alloc` in `total` over cpus, memory and disk (ports are not a share).
pub fn dominant_share(alloc: &Resources, total: &Resources) -> f64 {
    let mut s: f64 = 0.0;
    if total.cpus_milli > 0 {
        s = s.max(alloc.cpus_milli as f64 / total.cpus_milli as f64);
    }
    if total.mem_bytes > 0 {
        s = s.max(alloc.mem_bytes as f64 / total.mem_bytes as f64);
    }
    if total.disk_bytes > 0 {
        s = s.max(alloc.disk_bytes as f64 / total.disk_bytes as f64);
    }
    s
}

/// True if `available` meets at least one non-zero quantity of `min` (or `min` is empty).
pub fn allocatable(available: &Resources, min: &Resources) -> bool {
    if available.is_empty() {
        return false;
    }
    let mut any_min = false;
    for (have, want) in [
        (available.cpus_milli, min.cpus_milli),
        (available.mem_bytes, min.mem_bytes),
        (available.disk_bytes, min.disk_bytes),
    ] {
        if want > 0 {
            any_min = true;
            if have >= want {
                return true;
            }
        }
    }
    !any_min
}

/// Weighted DRF across roles, then DRF across frameworks of a role.
#[derive(Default)]
pub struct DrfAllocator {
    passes: u64,
}

impl Allocator for DrfAllocator {
    fn name(&self) -> &'static str {
        "drf"
    }
    fn allocate(&mut self, now: Instant, view: &ClusterView<'_>) -> Vec<Allocation> {
        self.passes += 1;
        hierarchical(now, view, RoleOrder::WeightedShare, self.passes)
    }
}

/// Roles in strict order of weight (highest first, then name); DRF among frameworks of a role.
/// A lower role gets an agent only when no framework of a higher role will take it.
#[derive(Default)]
pub struct StrictPriorityAllocator {
    passes: u64,
}

impl Allocator for StrictPriorityAllocator {
    fn name(&self) -> &'static str {
        "strict-priority"
    }
    fn allocate(&mut self, now: Instant, view: &ClusterView<'_>) -> Vec<Allocation> {
        self.passes += 1;
        hierarchical(now, view, RoleOrder::Priority, self.passes)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum RoleOrder {
    WeightedShare,
    Priority,
}

/// A sort key: a float (total order) then an index for ties.
#[derive(Clone, Copy, Debug)]
struct Key(f64, usize);

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

struct RoleState {
    weight: f64,
    allocated: Resources,
    key: Key,
    /// (framework index, position of the role in that framework's `roles`) sorted by share.
    members: BTreeSet<(Key, usize, usize)>,
}

/// `a += b` for cpus, memory and disk (ports are not a share).
pub(crate) fn add_scalars(a: &mut Resources, b: &Resources) {
    a.cpus_milli = a.cpus_milli.saturating_add(b.cpus_milli);
    a.mem_bytes = a.mem_bytes.saturating_add(b.mem_bytes);
    a.disk_bytes = a.disk_bytes.saturating_add(b.disk_bytes);
}

fn hierarchical(
    now: Instant,
    view: &ClusterView<'_>,
    order: RoleOrder,
    pass: u64,
) -> Vec<Allocation> {
    let (role_index, roles, fw_alloc) = role_states(view);
    // Role keys. Ties between roles break by name (the BTreeMap order of `role_index`).
    let mut name_rank = vec![0usize; roles.len()];
    for (rank, idx) in role_index.values().enumerate() {
        name_rank[*idx] = rank;
    }
    let mut p = Pass {
        view,
        order,
        now,
        roles,
        role_set: BTreeSet::new(),
        fw_alloc,
        name_rank,
    };
    for i in 0..p.roles.len() {
        p.roles[i].key = p.role_key(i);
        if !p.roles[i].members.is_empty() {
            p.role_set.insert((p.roles[i].key, i));
        }
    }

    let n = view.agents.len();
    let mut out = Vec::with_capacity(n);
    if n == 0 || p.role_set.is_empty() {
        return out;
    }
    let mut quota = QuotaBook::new(view, &role_index, p.roles.len());
    // The frameworks that want offers, by master index (fixed for the pass): an agent whose
    // filters block every one of them is skipped after one look at its own filters, instead
    // of a walk through all the frameworks.
    let (wants, wanting) = wanting_frameworks(view);
    // Rotate the starting agent each pass so that no agent is always first.
    let start = (pass as usize) % n;
    for step in 0..n {
        let ai = (start + step) % n;
        let agent = &view.agents[ai];
        if !agent.reserved.is_empty() {
            p.offer_reserved(ai, &role_index, &mut quota, &mut out);
        }
        if !allocatable(&agent.available, view.min_allocatable) {
            continue;
        }
        let filters = agent.filters;
        if !filters.is_empty() && filters.len() >= wanting {
            let blocked = filters
                .iter()
                .filter(|(fw, f)| {
                    wants.get(*fw as usize).copied().unwrap_or(false)
                        && f.blocks(now, &agent.available)
                })
                .count();
            if blocked >= wanting {
                continue;
            }
        }
        if quota.active() {
            p.offer_with_quota(ai, &mut quota, &mut out);
            continue;
        }
        let Some(chosen) = p.choose(filters, &agent.available, |_| true, |_| true) else {
            continue;
        };
        out.push(Allocation {
            framework: chosen.framework,
            agent: ai,
            role: chosen.framework_role,
            resources: None,
            reserved: false,
        });
        p.charge(chosen, &agent.available);
    }
    out
}

/// A candidate of one allocation: role `role` (pass index), framework `framework` (view
/// index) with its key in the role, and the role's position in that framework's roles.
#[derive(Clone, Copy)]
struct Chosen {
    role: usize,
    key: Key,
    framework: usize,
    framework_role: usize,
}

/// The state of one allocation pass: roles in share (or priority) order, each with its
/// frameworks in share order.
struct Pass<'v, 'a> {
    view: &'v ClusterView<'a>,
    order: RoleOrder,
    now: Instant,
    roles: Vec<RoleState>,
    role_set: BTreeSet<(Key, usize)>,
    fw_alloc: Vec<Vec<Resources>>,
    name_rank: Vec<usize>,
}

impl Pass<'_, '_> {
    fn role_key(&self, ri: usize) -> Key {
        let r = &self.roles[ri];
        match self.order {
            RoleOrder::WeightedShare => Key(
                dominant_share(&r.allocated, &self.view.total) / r.weight,
                self.name_rank[ri],
            ),
            RoleOrder::Priority => Key(-r.weight, self.name_rank[ri]),
        }
    }

    /// The first role (in order) that `role_ok` accepts with a framework that `framework_ok`
    /// accepts and whose filter does not block `available`.
    fn choose(
        &self,
        filters: &[(u32, Filter)],
        available: &Resources,
        role_ok: impl Fn(usize) -> bool,
        framework_ok: impl Fn(usize) -> bool,
    ) -> Option<Chosen> {
        for &(_, ri) in self.role_set.iter() {
            if !role_ok(ri) {
                continue;
            }
            for &(key, fi, fri) in self.roles[ri].members.iter() {
                let filtered = !filters.is_empty()
                    && filter_of(filters, self.view.frameworks[fi].ix)
                        .is_some_and(|f| f.blocks(self.now, available));
                if !filtered && framework_ok(fi) {
                    return Some(Chosen {
                        role: ri,
                        key,
                        framework: fi,
                        framework_role: fri,
                    });
                }
            }
        }
        None
    }

    /// Counts `offered` toward the chosen framework's share in its role and the role's share.
    fn charge(&mut self, c: Chosen, offered: &Resources) {
        let role = &mut self.roles[c.role];
        role.members.remove(&(c.key, c.framework, c.framework_role));
        let alloc = &mut self.fw_alloc[c.framework][c.framework_role];
        add_scalars(alloc, offered);
        let share = dominant_share(alloc, &self.view.total);
        role.members
            .insert((Key(share, c.framework), c.framework, c.framework_role));
        if self.order == RoleOrder::WeightedShare {
            let old = role.key;
            add_scalars(&mut role.allocated, offered);
            self.role_set.remove(&(old, c.role));
            let key = self.role_key(c.role);
            self.roles[c.role].key = key;
            self.role_set.insert((key, c.role));
        }
    }

    /// Offers agent `ai`'s free reserved resources, each role's to the first of its
    /// frameworks (in share order) that wants them, cut to the role's limit.
    fn offer_reserved(
        &mut self,
        ai: usize,
        role_index: &BTreeMap<&str, usize>,
        quota: &mut QuotaBook,
        out: &mut Vec<Allocation>,
    ) {
        let view = self.view;
        let agent = &view.agents[ai];
        for (name, free) in &agent.reserved {
            let Some(&ri) = role_index.get(name) else {
                continue;
            };
            if !allocatable(free, self.view.min_allocatable) {
                continue;
            }
            let Some(offer) = quota.cut(ri, free, true, false) else {
                continue;
            };
            let Some(c) = self.choose(agent.filters, &offer, |r| r == ri, |_| true) else {
                continue;
            };
            quota.record(ri, &offer, true);
            self.charge(c, &offer);
            out.push(Allocation {
                framework: c.framework,
                agent: ai,
                role: c.framework_role,
                resources: Some(offer),
                reserved: true,
            });
        }
    }

    /// Offers agent `ai`'s unreserved free resources under quota: roles with an unmet
    /// guarantee first, then every role in order; each offer cut by [`QuotaBook::cut`], what is
    /// left offered on to the next candidate (each framework at most once per agent).
    fn offer_with_quota(&mut self, ai: usize, quota: &mut QuotaBook, out: &mut Vec<Allocation>) {
        let view = self.view;
        let agent = &view.agents[ai];
        let mut left = agent.available.clone();
        let mut given: Vec<usize> = Vec::new();
        while allocatable(&left, self.view.min_allocatable) {
            let pick = |stage1: bool| {
                let c = self.choose(
                    agent.filters,
                    &left,
                    |ri| (!stage1 || quota.unmet(ri)) && quota.can_offer(ri, &left, stage1),
                    |fi| !given.contains(&fi),
                )?;
                Some((c, quota.cut(c.role, &left, false, stage1)?))
            };
            let Some((c, offer)) = pick(true).or_else(|| pick(false)) else {
                break;
            };
            quota.record(c.role, &offer, false);
            self.charge(c, &offer);
            given.push(c.framework);
            left = Resources {
                cpus_milli: left.cpus_milli - offer.cpus_milli,
                mem_bytes: left.mem_bytes - offer.mem_bytes,
                disk_bytes: left.disk_bytes - offer.disk_bytes,
                ports: Vec::new(),
            };
            out.push(Allocation {
                framework: c.framework,
                agent: ai,
                role: c.framework_role,
                resources: Some(offer),
                reserved: false,
            });
        }
    }
}

/// The role states of a pass, keyed by name (to their position), and each framework's scalar
/// allocation per role (a mutable copy; ports are no share). Shares count every framework's
/// allocation, wanting offers or not.
fn role_states<'v>(
    view: &ClusterView<'v>,
) -> (
    BTreeMap<&'v str, usize>,
    Vec<RoleState>,
    Vec<Vec<Resources>>,
) {
    let mut role_index: BTreeMap<&str, usize> = BTreeMap::new();
    let mut roles: Vec<RoleState> = Vec::new();
    // Per framework and role: scalar allocation (mutable copy, ports ignored for shares).
    let mut fw_alloc: Vec<Vec<Resources>> = Vec::with_capacity(view.frameworks.len());
    for (fi, fw) in view.frameworks.iter().enumerate() {
        let mut allocs = Vec::with_capacity(fw.roles.len());
        for (ri, r) in fw.roles.iter().enumerate() {
            let idx = *role_index.entry(r.role).or_insert_with(|| {
                roles.push(RoleState {
                    weight: role_weight(view.role_weights, r.role),
                    allocated: Resources::default(),
                    key: Key(0.0, 0),
                    members: BTreeSet::new(),
                });
                roles.len() - 1
            });
            let mut a = Resources::default();
            add_scalars(&mut a, &r.allocated);
            add_scalars(&mut roles[idx].allocated, &r.allocated);
            if r.wants_offers {
                let share = dominant_share(&a, &view.total);
                roles[idx].members.insert((Key(share, fi), fi, ri));
            }
            allocs.push(a);
        }
        fw_alloc.push(allocs);
    }
    (role_index, roles, fw_alloc)
}

/// Which frameworks (by master index) want offers, and how many.
fn wanting_frameworks(view: &ClusterView<'_>) -> (Vec<bool>, usize) {
    let slots = view
        .frameworks
        .iter()
        .map(|f| f.ix as usize + 1)
        .max()
        .unwrap_or(0);
    let mut wants = vec![false; slots];
    let mut wanting = 0usize;
    for f in &view.frameworks {
        if f.roles.iter().any(|r| r.wants_offers) {
            if let Some(w) = wants.get_mut(f.ix as usize) {
                *w = true;
                wanting += 1;
            }
        }
    }
    (wants, wanting)
}
