//! Reads: the cluster as `corral state` shows it, built from the registry and the soft state.

use super::offers::offered_ports;
use super::*;
use crate::events::{agent_status, task_summary};

impl Master {
    /// The cluster as `corral state` shows it. O(cluster); the daemon publishes it periodically
    /// so that reads never wait on the core.
    pub fn snapshot(&self) -> ClusterState {
        let (total, agents) = self.agent_states();
        let (frameworks, roles) = self.framework_and_role_states(&total);
        let (tasks, completed_frameworks) = self.task_states();
        ClusterState {
            agents,
            frameworks,
            tasks,
            masters: self.masters.clone(),
            roles,
            completed_frameworks,
        }
    }

    /// Every agent, and the total of the reachable ones.
    fn agent_states(&self) -> (Resources, Vec<proto::AgentState>) {
        let mut total = Resources::default();
        for a in self.registry.agents().values().filter(|a| a.reachable) {
            total.cpus_milli += a.info.resources.cpus_milli;
            total.mem_bytes += a.info.resources.mem_bytes;
            total.disk_bytes += a.info.resources.disk_bytes;
        }
        let mut agents = Vec::with_capacity(self.registry.agents().len());
        for (id, a) in self.registry.agents() {
            let rt = self.agents.get(id);
            let status = agent_status(a.reachable, a.mark);
            let mut used = a.used.clone();
            if let Some(rt) = rt {
                used.add_assign(&rt.pending);
            }
            agents.push(proto::AgentState {
                id: id.clone(),
                hostname: a.info.hostname.clone(),
                status,
                total: a.info.resources.clone(),
                used,
                offered: rt
                    .map(|r| Resources {
                        ports: offered_ports(&self.offers, &r.offers),
                        ..r.offered.clone()
                    })
                    .unwrap_or_default(),
                attributes: a.info.attributes.clone(),
                version: a.info.software_version.clone(),
                pressure: rt.and_then(|r| r.pressure),
                reserved: self
                    .registry
                    .reservations_of(id, a)
                    .into_iter()
                    .map(|(role, r)| (role.to_owned(), r))
                    .collect(),
                reserved_dynamic: self
                    .registry
                    .dynamic_reservations(id)
                    .cloned()
                    .unwrap_or_default(),
            });
        }
        (total, agents)
    }

    /// Every framework, and every role (with what its frameworks hold, against `total`).
    fn framework_and_role_states(
        &self,
        total: &Resources,
    ) -> (Vec<proto::FrameworkState>, Vec<proto::RoleState>) {
        let mut frameworks = Vec::new();
        let mut role_alloc: BTreeMap<String, Resources> = BTreeMap::new();
        let mut role_used: BTreeMap<String, Resources> = BTreeMap::new();
        let mut role_starved: BTreeMap<String, u64> = BTreeMap::new();
        for (id, f) in self.registry.frameworks() {
            let rt = self.frameworks.get(id);
            let mut used = f.used_total();
            let mut offered = Resources::default();
            for (role, u) in &f.used {
                allocator::add_scalars(role_used.entry(role.clone()).or_default(), u);
            }
            for role in f.roles() {
                let ra = role_alloc.entry(role.clone()).or_default();
                for part in [
                    f.used.get(&role),
                    rt.and_then(|r| r.offered.get(&role)),
                    rt.and_then(|r| r.pending.get(&role)),
                ]
                .into_iter()
                .flatten()
                {
                    ra.add_assign(part);
                }
                let starved = match rt {
                    Some(r)
                        if r.session.is_some()
                            && !r.suppressed.contains(&role)
                            && r.offers.is_empty() =>
                    {
                        u64::try_from(
                            self.now
                                .saturating_duration_since(r.wanting_since)
                                .as_millis(),
                        )
                        .unwrap_or(u64::MAX)
                    }
                    _ => 0,
                };
                let e = role_starved.entry(role).or_default();
                *e = (*e).max(starved);
            }
            if let Some(r) = rt {
                for p in r.pending.values() {
                    used.add_assign(p);
                }
                for o in r.offered.values() {
                    allocator::add_scalars(&mut offered, o);
                }
                offered.ports = offered_ports(&self.offers, &r.offers);
            }
            let roles = f.roles();
            frameworks.push(proto::FrameworkState {
                id: id.clone(),
                name: f.info.name.clone(),
                principal: f.principal.clone().unwrap_or_default(),
                dominant_share: allocator::dominant_share(&used.add(&offered), total),
                used,
                offered,
                connected: rt.is_some_and(|r| r.session.is_some()),
                suppressed: rt.is_some_and(|r| roles.iter().all(|x| r.suppressed.contains(x))),
                roles,
            });
        }
        for w in self.config.role_weights.keys() {
            role_alloc.entry(w.clone()).or_default();
        }
        for q in self.registry.quotas().keys() {
            role_alloc.entry(q.clone()).or_default();
        }
        let roles = role_alloc
            .iter()
            .map(|(name, alloc)| {
                let used = role_used.remove(name).unwrap_or_default();
                proto::RoleState {
                    name: name.clone(),
                    weight: self.config.weight(name),
                    dominant_share: allocator::dominant_share(alloc, total),
                    starved_ms: role_starved.get(name).copied().unwrap_or(0),
                    quota: self.registry.quotas().get(name).cloned(),
                    offered: Resources {
                        ports: Vec::new(),
                        ..alloc.saturating_sub(&used)
                    },
                    used,
                }
            })
            .collect();
        (frameworks, roles)
    }

    /// Every task (completed ones first per framework), then the completed frameworks and
    /// their tasks.
    fn task_states(&self) -> (Vec<proto::TaskSummary>, Vec<proto::CompletedFrameworkState>) {
        let mut tasks = Vec::new();
        for (fw_id, f) in self.registry.frameworks() {
            for t in f.completed.iter().chain(f.tasks.values()) {
                let key = TaskKey {
                    framework_id: fw_id.clone(),
                    task_id: t.info.task_id.clone(),
                };
                let usage = self
                    .agents
                    .get(&t.agent_id)
                    .and_then(|a| a.usage.get(&key).cloned());
                tasks.push(task_summary(fw_id, t, usage));
            }
        }
        let mut completed_frameworks =
            Vec::with_capacity(self.registry.completed_frameworks().len());
        for c in self.registry.completed_frameworks() {
            completed_frameworks.push(proto::CompletedFrameworkState {
                id: c.framework_id.clone(),
                name: c.info.name.clone(),
                principal: c.principal.clone().unwrap_or_default(),
                roles: c.roles(),
                removed_at_ms: c.removed_at_ms,
            });
            for t in &c.tasks {
                tasks.push(task_summary(&c.framework_id, t, None));
            }
        }
        (tasks, completed_frameworks)
    }
}
