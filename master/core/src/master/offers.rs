//! Offers and allocation: one allocation pass (the view, the allocator, the Offer frames),
//! rescinding and timing out offers, refusal filters.

use super::*;

impl Master {
    /// Framework `fw`'s filter on agent `agent` (indexes) may have run out: it goes if it
    /// has, and allocation runs.
    pub(super) fn filter_expired(&mut self, fw: u32, agent: u32) {
        let now = self.now;
        let expired = self
            .agents
            .at_mut(agent)
            .is_some_and(|a| match a.filters.get(fw) {
                Some(f) if f.until <= now => a.filters.remove(fw).is_some(),
                _ => false,
            });
        if expired {
            if let Some(rt) = self.frameworks.at_mut(fw) {
                rt.filtered.remove(&agent);
            }
        }
        self.request_allocation();
    }

    /// One allocation pass: build the view, ask the allocator, send the offers.
    ///
    /// The view lists agents in id order (the registry's, joined with the agent table's, which
    /// shares that order) and frameworks in id order; each carries its dense index, so the
    /// allocator checks filters and the bookkeeping below updates offers without touching a
    /// string id. The only strings made per offer are the ones the `Offer` frame carries.
    pub(super) fn allocate(&mut self) {
        let Some(window) = self.admitted_window() else {
            return;
        };
        self.allocation_passes += 1;
        let now = self.now;
        let next_window;
        let first_key = self.next_offer + 1;
        let pass = {
            let PassAgents {
                total,
                views: agents,
                entries,
                next_window: next,
            } = agent_views(
                &self.registry,
                &self.agents,
                &self.offers,
                &self.config.min_allocatable,
                (self.allocation_cursor, window),
            );
            next_window = next.map(|(next, found)| (next, found, window));
            let frameworks = framework_views(&self.registry, &self.frameworks);
            if agents.is_empty() || frameworks.is_empty() {
                None
            } else {
                let view = ClusterView {
                    total,
                    agents,
                    frameworks,
                    role_weights: &self.config.role_weights,
                    min_allocatable: &self.config.min_allocatable,
                    quotas: quota_views(&self.registry, &self.frameworks),
                };
                let allocations = self.allocator.allocate(now, &view);
                let maker = OfferMaker {
                    table: &self.agents,
                    id_prefix: &self.config.id_prefix,
                    next_offer: &mut self.next_offer,
                };
                Some(maker.make(view, &entries, allocations))
            }
        };
        // A window with nothing to offer after all still moves the sweep on.
        let Some(pass) = pass else {
            self.continue_sweep(next_window);
            return;
        };
        let made = usize::try_from(self.next_offer + 1 - first_key).unwrap_or(usize::MAX);
        self.unanswered.made(now, first_key, made);
        self.record_offers(&pass);
        self.send_offers(pass);
        self.continue_sweep(next_window);
    }

    /// Books a pass's offers: the agents' and frameworks' offered resources, the offer table,
    /// the offer timeouts.
    fn record_offers(&mut self, pass: &PassOffers) {
        let now = self.now;
        let lists = pass.view_frameworks.iter().zip(&pass.by_framework);
        for ((&fix, list), &start) in lists.zip(&pass.starts) {
            let Some(f) = self.frameworks.at_mut(fix) else {
                continue;
            };
            let keys = pass.made.get(start..).unwrap_or_default();
            for (offer, &(aix, key)) in list.iter().zip(keys) {
                if let Some(a) = self.agents.at_mut(aix) {
                    allocator::add_scalars(&mut a.offered, &offer.resources);
                    a.offers.insert(key);
                }
                match f.offered.get_mut(&offer.role) {
                    Some(r) => allocator::add_scalars(r, &offer.resources),
                    None => {
                        let mut r = Resources::default();
                        allocator::add_scalars(&mut r, &offer.resources);
                        f.offered.insert(offer.role.clone(), r);
                    }
                }
                f.offers.insert(key);
                f.wanting_since = now;
                self.offers.insert(
                    key,
                    OfferRt {
                        framework: fix,
                        agent: aix,
                        role: offer.role.clone(),
                        resources: offer.resources.clone(),
                        reserved: offer.reserved,
                    },
                );
                if let Some(t) = self.config.offer_timeout {
                    self.timers.set(TimerKey::Offer(key), now + t);
                }
            }
        }
    }

    /// Sends a pass's offers, at most `MAX_OFFERS_PER_EVENT` per frame.
    fn send_offers(&mut self, pass: PassOffers) {
        for (fix, mut offers) in pass.view_frameworks.into_iter().zip(pass.by_framework) {
            if offers.is_empty() {
                continue;
            }
            let Some(session) = self.frameworks.at(fix).and_then(|f| f.session) else {
                continue;
            };
            while !offers.is_empty() {
                let rest = if offers.len() > limits::MAX_OFFERS_PER_EVENT {
                    offers.split_off(limits::MAX_OFFERS_PER_EVENT)
                } else {
                    Vec::new()
                };
                self.send(
                    session,
                    ServerFrame::Framework(FrameworkEvent::Offers { offers }),
                );
                offers = rest;
            }
        }
    }

    /// Removes an offer and returns its resources to the pool. Sends a Rescind when `notify`.
    pub(super) fn remove_offer(&mut self, key: u64, notify: bool) -> Option<OfferRt> {
        let offer = self.offers.remove(&key)?;
        self.timers.cancel(&TimerKey::Offer(key));
        self.unanswered.answered(key);
        if let Some(a) = self.agents.at_mut(offer.agent) {
            sub_scalars(&mut a.offered, &offer.resources);
            a.offers.remove(&key);
        }
        let mut session = None;
        let now = self.now;
        if let Some(f) = self.frameworks.at_mut(offer.framework) {
            if let Some(r) = f.offered.get_mut(&offer.role) {
                sub_scalars(r, &offer.resources);
                if r.is_empty() {
                    f.offered.remove(&offer.role);
                }
            }
            f.offers.remove(&key);
            if f.offers.is_empty() {
                f.wanting_since = now;
            }
            session = f.session;
        }
        if notify {
            self.offers_rescinded += 1;
            if let Some(s) = session {
                let offer_id = self.offer_id(key);
                self.send(
                    s,
                    ServerFrame::Framework(FrameworkEvent::Rescind { offer_id }),
                );
            }
        }
        self.request_allocation();
        Some(offer)
    }

    pub(super) fn rescind_agent_offers(&mut self, agent: &AgentId) {
        let keys: Vec<u64> = self
            .agents
            .get(agent)
            .map(|a| a.offers.iter().copied().collect())
            .unwrap_or_default();
        for key in keys {
            self.remove_offer(key, true);
        }
    }

    pub(super) fn rescind_framework_offers(&mut self, fw: &FrameworkId, notify: bool) {
        let keys: Vec<u64> = self
            .frameworks
            .get(fw)
            .map(|f| f.offers.iter().copied().collect())
            .unwrap_or_default();
        for key in keys {
            self.remove_offer(key, notify);
        }
    }

    pub(super) fn offer_timed_out(&mut self, key: u64) {
        // Rescind, and keep the hoarder away from these resources for the default refusal so
        // that another framework gets them first.
        if let Some(o) = self.remove_offer(key, true) {
            let d = self.config.default_refuse;
            self.add_filter(o.framework, o.agent, o.resources, d);
        }
    }

    /// After a pass: `window` is `Some((where the next window starts, agents considered, the
    /// window's size))` when the pass offered only a window of them (`take_pass_window`).
    /// Passes of their own offer the next windows until one sweep has looked at every agent;
    /// then passes wait for news again, so agents that every framework has filtered are not
    /// looked at every `allocation_batch`.
    fn continue_sweep(&mut self, window: Option<(usize, usize, usize)>) {
        let Some((next, considered, size)) = window else {
            self.sweep_left = 0;
            return;
        };
        self.allocation_cursor = next;
        let left = if self.sweep_left == 0 {
            considered
        } else {
            self.sweep_left
        };
        self.sweep_left = left.saturating_sub(size);
        if self.sweep_left > 0 {
            self.schedule_pass();
        }
    }

    /// Admission control: how many agents a pass may offer now, or `None` while the
    /// registry is too far behind for a pass to run. What is behind is what is proposed and
    /// not committed (`in_flight_weight`) and what is about to be (offers made and not
    /// answered yet, [`UnansweredOffers`]); and how long the oldest proposal has waited for
    /// its commit (`commit_lag`). Held from `ALLOCATION_HOLD_WEIGHT` or `ALLOCATION_HOLD_LAG`
    /// until half of either is left: `resume_held_allocation` asks for the pass again after
    /// each commit, an answered offer asks for one anyway, and a pass held only by unanswered
    /// offers is retried when the oldest stop counting. A pass that runs offers at most what
    /// is left below the hold (and `MAX_AGENTS_PER_PASS`), so it cannot overshoot it.
    fn admitted_window(&mut self) -> Option<usize> {
        if let Some(cutoff) = self.now.checked_sub(ANSWER_GRACE) {
            self.unanswered.expire(cutoff);
        }
        let behind = self.registry_behind();
        let lag = self.commit_lag();
        let hold = if self.allocation_held {
            behind > limits::ALLOCATION_HOLD_WEIGHT / 2 || lag > limits::ALLOCATION_HOLD_LAG / 2
        } else {
            behind >= limits::ALLOCATION_HOLD_WEIGHT || lag >= limits::ALLOCATION_HOLD_LAG
        };
        if !hold {
            self.allocation_held = false;
            let room = limits::ALLOCATION_HOLD_WEIGHT.saturating_sub(behind);
            return Some(room.clamp(1, limits::MAX_AGENTS_PER_PASS));
        }
        if !self.allocation_held {
            self.allocation_held = true;
            self.allocations_held += 1;
        }
        if let Some(oldest) = self.unanswered.oldest() {
            self.timers
                .set_no_later(TimerKey::Allocate, oldest + ANSWER_GRACE);
        }
        None
    }

    /// What the registry is behind by: proposals in flight (by weight) and offers not yet
    /// answered, launches about to be.
    fn registry_behind(&self) -> usize {
        self.in_flight_weight + self.unanswered.count()
    }

    /// After a commit: a pass held back by admission control runs once half of what held
    /// it has committed (or been answered).
    pub(super) fn resume_held_allocation(&mut self) {
        let caught_up = self.registry_behind() <= limits::ALLOCATION_HOLD_WEIGHT / 2
            && self.commit_lag() <= limits::ALLOCATION_HOLD_LAG / 2;
        if self.allocation_held && caught_up {
            self.allocation_held = false;
            self.request_allocation();
        }
    }

    /// News (resources freed, an agent or framework come, a filter ended): a pass is due,
    /// and a sweep under way starts again, so that the agents the news concerns are looked
    /// at even if the sweep had passed them.
    pub(super) fn request_allocation(&mut self) {
        self.sweep_left = 0;
        self.schedule_pass();
    }

    fn schedule_pass(&mut self) {
        self.timers
            .set_no_later(TimerKey::Allocate, self.now + self.config.allocation_batch);
    }

    pub(super) fn refuse_duration(&self, filters: Option<&proto::Filters>) -> Duration {
        match filters.and_then(|f| f.refuse_seconds) {
            Some(s) if s.is_finite() && s >= 0.0 => {
                Duration::from_secs_f64(s.min(limits::MAX_REFUSE_SECONDS))
            }
            _ => self.config.default_refuse,
        }
    }

    /// Filters `refused` of agent `agent` (index) for framework `fw` (index) for `d`.
    pub(super) fn add_filter(&mut self, fw: u32, agent: u32, refused: Resources, d: Duration) {
        if d.is_zero() || refused.is_empty() {
            return;
        }
        let now = self.now;
        // One filter per (framework, agent); each is removed when its expiry fires.
        let (Some(rt), Some(a)) = (self.frameworks.at_mut(fw), self.agents.at_mut(agent)) else {
            return;
        };
        rt.filtered.insert(agent);
        a.filters.insert(fw, Filter::new(now + d, refused));
        // Allocation is event-driven: the end of a filter is an event.
        self.timers.set(TimerKey::FilterExpiry(fw, agent), now + d);
    }

    pub(super) fn clear_filters(&mut self, fw: &FrameworkId) {
        let Some(fix) = self.frameworks.ix(fw) else {
            return;
        };
        let agents = self
            .frameworks
            .at_mut(fix)
            .map(|rt| std::mem::take(&mut rt.filtered))
            .unwrap_or_default();
        for a in agents {
            if let Some(rt) = self.agents.at_mut(a) {
                rt.filters.remove(fix);
            }
            self.timers.cancel(&TimerKey::FilterExpiry(fix, a));
        }
    }

    /// Forgets every filter on a removed agent (`filters`, by framework index) before its
    /// index is reused.
    pub(super) fn clear_agent_filters(&mut self, agent: u32, filters: AgentFilters) {
        for (fix, _) in filters.iter() {
            if let Some(rt) = self.frameworks.at_mut(fix) {
                rt.filtered.remove(&agent);
            }
            self.timers.cancel(&TimerKey::FilterExpiry(fix, agent));
        }
    }

    /// The numeric key of an offer id this master generated (`<prefix>-O<n>`), else `None`
    /// (such an offer is unknown).
    pub(super) fn offer_key(&self, id: &OfferId) -> Option<u64> {
        let digits =
            id.0.strip_prefix(self.config.id_prefix.as_str())?
                .strip_prefix("-O")?;
        if digits.is_empty()
            || digits.starts_with('0')
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        digits.parse().ok()
    }

    pub(super) fn offer_id(&self, key: u64) -> OfferId {
        OfferId(make_id(&self.config.id_prefix, 'O', key))
    }
}

/// `a -= b` for cpus, memory and disk, floored at zero.
fn sub_scalars(a: &mut Resources, b: &Resources) {
    a.cpus_milli = a.cpus_milli.saturating_sub(b.cpus_milli);
    a.mem_bytes = a.mem_bytes.saturating_sub(b.mem_bytes);
    a.disk_bytes = a.disk_bytes.saturating_sub(b.disk_bytes);
}

/// The ports of `keys`' offers, normalized. Offers of one agent never overlap, so this is what
/// the agent has offered; for a framework it is the union over its agents.
pub(super) fn offered_ports(
    offers: &FastMap<u64, OfferRt>,
    keys: &BTreeSet<u64>,
) -> Vec<proto::PortRange> {
    let ports: Vec<proto::PortRange> = keys
        .iter()
        .filter_map(|k| offers.get(k))
        .flat_map(|o| o.resources.ports.iter().copied())
        .collect();
    if ports.is_empty() {
        return ports;
    }
    Resources::default().with_ports(ports).ports
}

/// The scalars an agent has free (`total - used - offered - pending`, floored at zero), no ports.
fn free_scalars(
    total: &Resources,
    used: &Resources,
    offered: &Resources,
    pending: &Resources,
) -> Resources {
    let free =
        |t: u64, u: u64, o: u64, p: u64| t.saturating_sub(u).saturating_sub(o).saturating_sub(p);
    Resources {
        cpus_milli: free(
            total.cpus_milli,
            used.cpus_milli,
            offered.cpus_milli,
            pending.cpus_milli,
        ),
        mem_bytes: free(
            total.mem_bytes,
            used.mem_bytes,
            offered.mem_bytes,
            pending.mem_bytes,
        ),
        disk_bytes: free(
            total.disk_bytes,
            used.disk_bytes,
            offered.disk_bytes,
            pending.disk_bytes,
        ),
        ports: Vec::new(),
    }
}

/// What an agent has free: `total - used - offered - pending`, each quantity floored at zero.
/// When nothing holds ports, the free ports are the agent's (the registry keeps them
/// normalized), copied once instead of subtracted.
fn free_resources(
    total: &Resources,
    used: &Resources,
    offered: &Resources,
    pending: &Resources,
) -> Resources {
    if used.ports.is_empty() && offered.ports.is_empty() && pending.ports.is_empty() {
        return Resources {
            ports: total.ports.clone(),
            ..free_scalars(total, used, offered, pending)
        };
    }
    let mut free = total.saturating_sub(used);
    if !offered.is_empty() {
        free = free.saturating_sub(offered);
    }
    if !pending.is_empty() {
        free = free.saturating_sub(pending);
    }
    free
}

/// The offers of one allocation pass, per framework of the view (by position). `made` holds
/// (agent index, offer key) of each, grouped by framework: those of position `p` start at
/// `starts[p]`, in the order of `by_framework[p]`, so the bookkeeping visits each framework
/// once.
struct PassOffers {
    /// The dense index of each framework in the view, by position.
    view_frameworks: Vec<u32>,
    by_framework: Vec<Vec<Offer>>,
    made: Vec<(u32, u64)>,
    starts: Vec<usize>,
}

/// The agents a pass offers, with the registry entry of each (by the same position), the
/// total of every reachable agent, and where the next window starts (with the number of
/// agents the scan found) when this pass offers only a window of them.
struct PassAgents<'a> {
    total: Resources,
    views: Vec<allocator::AgentView<'a>>,
    entries: Vec<&'a crate::registry::AgentEntry>,
    next_window: Option<(usize, usize)>,
}

/// An agent the scan found with something to offer, by its scalars.
struct Candidate<'a> {
    ix: u32,
    id: &'a AgentId,
    entry: &'a crate::registry::AgentEntry,
    rt: &'a AgentRt,
    reserves: bool,
}

/// The agents of the view: those reachable, active, connected and with something free. One
/// scan of every agent, in id order, finds them by their scalars (no allocation per agent);
/// only the pass's window of them (`take_pass_window`, `window` agents from `cursor`) gets a
/// full view: free ports, reservation pools.
fn agent_views<'a>(
    registry: &'a Registry,
    table: &'a Table<AgentId, AgentRt>,
    offers: &FastMap<u64, OfferRt>,
    min_allocatable: &Resources,
    (cursor, window): (usize, usize),
) -> PassAgents<'a> {
    let (total, mut candidates) = scan_agents(registry, table, min_allocatable);
    let found = candidates.len();
    let next_window = take_pass_window(&mut candidates, cursor, window).map(|n| (n, found));
    let mut views = Vec::with_capacity(candidates.len());
    let mut entries = Vec::with_capacity(candidates.len());
    for c in candidates {
        let r = &c.entry.info.resources;
        let (entry, rt) = (c.entry, c.rt);
        let mut available = if rt.offers.is_empty() {
            free_resources(r, &entry.used, &rt.offered, &rt.pending)
        } else {
            let offered = Resources {
                ports: offered_ports(offers, &rt.offers),
                ..rt.offered.clone()
            };
            free_resources(r, &entry.used, &offered, &rt.pending)
        };
        if available.is_empty() {
            continue;
        }
        let mut reserved = Vec::new();
        if c.reserves {
            reserved = reserved_pools(registry, c.id, entry, rt, offers, &mut available);
        }
        views.push(allocator::AgentView {
            ix: c.ix,
            available,
            reserved,
            filters: rt.filters.as_slice(),
        });
        entries.push(entry);
    }
    PassAgents {
        total,
        views,
        entries,
        next_window,
    }
}

/// Every reachable agent's resources summed, and the agents that may have something to
/// offer: active, connected, and (unless they hold reservations, whose pools are worked out
/// later) with free scalars that meet `min_allocatable`.
fn scan_agents<'a>(
    registry: &'a Registry,
    table: &'a Table<AgentId, AgentRt>,
    min_allocatable: &Resources,
) -> (Resources, Vec<Candidate<'a>>) {
    let mut total = Resources::default();
    let mut candidates = Vec::new();
    let mut rows = table.iter().peekable();
    for (id, entry) in registry.agents() {
        if !entry.reachable {
            continue;
        }
        let r = &entry.info.resources;
        total.cpus_milli = total.cpus_milli.saturating_add(r.cpus_milli);
        total.mem_bytes = total.mem_bytes.saturating_add(r.mem_bytes);
        total.disk_bytes = total.disk_bytes.saturating_add(r.disk_bytes);
        // Both are in id order: advance the table to this id.
        while rows.next_if(|(_, k, _)| *k < id).is_some() {}
        let Some((ix, _, rt)) = rows.next_if(|(_, k, _)| *k == id) else {
            continue;
        };
        if entry.mark != AgentMark::Active || rt.session.is_none() {
            continue;
        }
        let reserves =
            !entry.info.reserved.is_empty() || registry.dynamic_reservations(id).is_some();
        // Most agents of a large cluster are busy or wholly offered: their scalars say so
        // without assembling their offered ports (a lookup per outstanding offer).
        if !reserves && !min_allocatable.is_empty() {
            let scalars = free_scalars(r, &entry.used, &rt.offered, &rt.pending);
            if !allocator::allocatable(&scalars, min_allocatable) {
                continue;
            }
        }
        candidates.push(Candidate {
            ix,
            id,
            entry,
            rt,
            reserves,
        });
    }
    (total, candidates)
}

/// Keeps at most `max` of a pass's agents, the window starting at position `cursor` (modulo
/// their number) and wrapping around. Returns where the next pass starts, or `None` when all
/// fit.
fn take_pass_window<A>(agents: &mut Vec<A>, cursor: usize, max: usize) -> Option<usize> {
    let n = agents.len();
    if n <= max {
        return None;
    }
    let start = cursor % n;
    agents.rotate_left(start);
    agents.truncate(max);
    Some(start + max)
}

/// The free part of each role's reservation on an agent, taken out of `free` (all the agent
/// has free), which is left with the unreserved part. A role's tasks (and launches, and
/// reserved offers) hold its reservation first; what they hold beyond it is unreserved. No pool
/// exceeds what is free, so no agent is over-committed whatever the reservations say.
fn reserved_pools<'a>(
    registry: &'a Registry,
    id: &AgentId,
    entry: &'a crate::registry::AgentEntry,
    rt: &AgentRt,
    offers: &FastMap<u64, OfferRt>,
    free: &mut Resources,
) -> Vec<(&'a str, Resources)> {
    let mut pools = Vec::new();
    for (role, reserved) in registry.reservations_of(id, entry) {
        let mut held = registry.used_by_role_on(entry, role);
        if let Some(p) = rt.pending_roles.get(role) {
            held.add_assign(p);
        }
        let mut pool = reserved.saturating_sub(&held);
        for o in rt.offers.iter().filter_map(|k| offers.get(k)) {
            if o.reserved && o.role == role {
                pool = pool.saturating_sub(&o.resources);
            }
        }
        pool.cpus_milli = pool.cpus_milli.min(free.cpus_milli);
        pool.mem_bytes = pool.mem_bytes.min(free.mem_bytes);
        pool.disk_bytes = pool.disk_bytes.min(free.disk_bytes);
        sub_scalars(free, &pool);
        if !pool.is_empty() {
            pools.push((role, pool));
        }
    }
    pools
}

/// Every role with a quota, with what all its frameworks hold (used, offered, launching),
/// connected or not.
fn quota_views<'a>(
    registry: &'a Registry,
    table: &Table<FrameworkId, FrameworkRt>,
) -> Vec<allocator::QuotaView<'a>> {
    let quotas = registry.quotas();
    if quotas.is_empty() {
        return Vec::new();
    }
    let mut consumed: BTreeMap<&str, Resources> = BTreeMap::new();
    for (id, f) in registry.frameworks() {
        let rt = table.get(id);
        let parts = f.used.iter().chain(
            rt.into_iter()
                .flat_map(|r| r.offered.iter().chain(r.pending.iter())),
        );
        for (role, r) in parts {
            if let Some((name, _)) = quotas.get_key_value(role) {
                allocator::add_scalars(consumed.entry(name.as_str()).or_default(), r);
            }
        }
    }
    quotas
        .iter()
        .map(|(role, quota)| allocator::QuotaView {
            role,
            quota,
            consumed: consumed.remove(role.as_str()).unwrap_or_default(),
        })
        .collect()
}

/// The frameworks of the view: connected ones with a role that wants offers, in id order, each
/// role with what it holds (used, offered and pending).
fn framework_views<'a>(
    registry: &'a Registry,
    table: &'a Table<FrameworkId, FrameworkRt>,
) -> Vec<allocator::FrameworkView<'a>> {
    let mut frameworks = Vec::with_capacity(table.len());
    for (ix, id, rt) in table.iter() {
        if rt.session.is_none() {
            continue;
        }
        let Some(entry) = registry.frameworks().get(id) else {
            continue;
        };
        // Roles as given, `["*"]` when none.
        let n = entry.info.roles.len().max(1);
        let mut roles = Vec::with_capacity(n);
        let mut any_wants = false;
        for i in 0..n {
            let role = entry.info.roles.get(i).map_or("*", String::as_str);
            let mut allocated = Resources::default();
            for part in [
                entry.used.get(role),
                rt.offered.get(role),
                rt.pending.get(role),
            ]
            .into_iter()
            .flatten()
            {
                allocated.cpus_milli += part.cpus_milli;
                allocated.mem_bytes += part.mem_bytes;
                allocated.disk_bytes += part.disk_bytes;
            }
            let wants_offers = !rt.suppressed.contains(role);
            any_wants |= wants_offers;
            roles.push(FrameworkRole {
                role,
                allocated,
                wants_offers,
            });
        }
        if any_wants {
            frameworks.push(allocator::FrameworkView { id, ix, roles });
        }
    }
    frameworks
}

/// Turns a pass's allocations into `Offer` frames, numbering them from `next_offer`.
struct OfferMaker<'a> {
    table: &'a Table<AgentId, AgentRt>,
    id_prefix: &'a str,
    next_offer: &'a mut u64,
}

impl OfferMaker<'_> {
    fn make(
        self,
        view: ClusterView<'_>,
        entries: &[&crate::registry::AgentEntry],
        allocations: Vec<allocator::Allocation>,
    ) -> PassOffers {
        let ClusterView {
            mut agents,
            frameworks,
            ..
        } = view;
        let mut counts = vec![0usize; frameworks.len()];
        for a in &allocations {
            if let Some(c) = counts.get_mut(a.framework) {
                *c += 1;
            }
        }
        let mut starts = Vec::with_capacity(counts.len());
        let mut sum = 0;
        for c in &counts {
            starts.push(sum);
            sum += c;
        }
        let mut made = vec![(0, 0); sum];
        let mut by_framework: Vec<Vec<Offer>> =
            counts.into_iter().map(Vec::with_capacity).collect();
        for a in allocations {
            let (Some(fw), Some(entry)) = (frameworks.get(a.framework), entries.get(a.agent))
            else {
                continue;
            };
            let (Some(role), Some(agent)) = (fw.roles.get(a.role), agents.get_mut(a.agent)) else {
                continue;
            };
            // Without a quota or reservation an agent is offered whole, once per pass: move
            // its free resources out.
            let resources = match a.resources {
                Some(r) => r,
                None => std::mem::take(&mut agent.available),
            };
            if resources.is_empty() {
                continue;
            }
            let (Some(agent_id), Some(list)) =
                (self.table.key(agent.ix), by_framework.get_mut(a.framework))
            else {
                continue;
            };
            let Some(slot) = starts
                .get(a.framework)
                .and_then(|s| made.get_mut(s + list.len()))
            else {
                continue;
            };
            *self.next_offer += 1;
            let key = *self.next_offer;
            *slot = (agent.ix, key);
            list.push(Offer {
                id: OfferId(make_id(self.id_prefix, 'O', key)),
                framework_id: fw.id.clone(),
                agent_id: agent_id.clone(),
                hostname: entry.info.hostname.clone(),
                resources,
                attributes: entry.info.attributes.clone(),
                role: role.role.to_owned(),
                pressure: self.table.at(agent.ix).and_then(|a| a.pressure),
                reserved: a.reserved,
            });
        }
        PassOffers {
            view_frameworks: frameworks.iter().map(|f| f.ix).collect(),
            by_framework,
            made,
            starts,
        }
    }
}

#[cfg(test)]
mod window_tests {
    use super::take_pass_window;

    #[test]
    fn a_pass_takes_a_window_of_agents_and_the_next_goes_on_from_there() {
        let all: Vec<u32> = (0..10).collect();
        let mut a = all.clone();
        assert_eq!(take_pass_window(&mut a, 0, 4), Some(4));
        assert_eq!(a, vec![0, 1, 2, 3]);
        let mut a = all.clone();
        assert_eq!(take_pass_window(&mut a, 8, 4), Some(12));
        assert_eq!(a, vec![8, 9, 0, 1], "wraps around");
        let mut a = all.clone();
        assert_eq!(
            take_pass_window(&mut a, 12, 4),
            Some(6),
            "modulo the agents"
        );
        assert_eq!(a, vec![2, 3, 4, 5]);
        let mut a = all;
        assert_eq!(take_pass_window(&mut a, 7, 10), None, "all fit");
        assert_eq!(a.len(), 10);
    }
}
