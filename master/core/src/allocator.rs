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
}

pub struct AgentView<'a> {
    /// The agent's dense index in the master.
    pub ix: u32,
    pub available: Resources,
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

/// One decision: `framework` (index into `view.frameworks`) gets all the free resources of
/// `agent` (index into `view.agents`) in its role `role` (index into that framework's `roles`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub framework: usize,
    pub agent: usize,
    pub role: usize,
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
    let (role_index, mut roles, mut fw_alloc) = role_states(view);
    // Role keys. Ties between roles break by name (the BTreeMap order of `role_index`).
    let mut name_rank = vec![0usize; roles.len()];
    for (rank, idx) in role_index.values().enumerate() {
        name_rank[*idx] = rank;
    }
    let role_key = |r: &RoleState, rank: usize| -> Key {
        match order {
            RoleOrder::WeightedShare => {
                Key(dominant_share(&r.allocated, &view.total) / r.weight, rank)
            }
            RoleOrder::Priority => Key(-r.weight, rank),
        }
    };
    let mut role_set: BTreeSet<(Key, usize)> = BTreeSet::new();
    for (i, r) in roles.iter_mut().enumerate() {
        r.key = role_key(r, name_rank[i]);
        if !r.members.is_empty() {
            role_set.insert((r.key, i));
        }
    }

    let n = view.agents.len();
    let mut out = Vec::with_capacity(n);
    if n == 0 || role_set.is_empty() {
        return out;
    }
    // The frameworks that want offers, by master index (fixed for the pass): an agent whose
    // filters block every one of them is skipped after one look at its own filters, instead
    // of a walk through all the frameworks.
    let (wants, wanting) = wanting_frameworks(view);
    // Rotate the starting agent each pass so that no agent is always first.
    let start = (pass as usize) % n;
    for step in 0..n {
        let ai = (start + step) % n;
        let agent = &view.agents[ai];
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
        let mut chosen = None;
        'roles: for &(_, ri) in role_set.iter() {
            for &(fkey, fi, fri) in roles[ri].members.iter() {
                if !filters.is_empty()
                    && filter_of(filters, view.frameworks[fi].ix)
                        .is_some_and(|f| f.blocks(now, &agent.available))
                {
                    continue;
                }
                chosen = Some((ri, fkey, fi, fri));
                break 'roles;
            }
        }
        let Some((ri, fkey, fi, fri)) = chosen else {
            continue;
        };
        out.push(Allocation {
            framework: fi,
            agent: ai,
            role: fri,
        });
        // Update the framework's share within the role, and the role's share.
        let role = &mut roles[ri];
        role.members.remove(&(fkey, fi, fri));
        add_scalars(&mut fw_alloc[fi][fri], &agent.available);
        let share = dominant_share(&fw_alloc[fi][fri], &view.total);
        role.members.insert((Key(share, fi), fi, fri));
        if order == RoleOrder::WeightedShare {
            role_set.remove(&(role.key, ri));
            add_scalars(&mut role.allocated, &agent.available);
            role.key = role_key(role, name_rank[ri]);
            role_set.insert((role.key, ri));
        }
    }
    out
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
