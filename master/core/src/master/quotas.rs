//! Operator calls of multi-tenancy's resource side: set or remove a role's quota, reserve or
//! unreserve an agent's resources for a role. Each is checked, proposed, and answered `Done`
//! once committed; on commit the offers it affects are rescinded so that the new rule holds
//! at once (`commits.rs`).

use super::*;
use proto::Quota;

impl Master {
    /// SetQuota: a valid role and a guarantee within the limit; `None` removes it.
    pub(super) fn set_quota(&mut self, session: SessionId, role: String, quota: Option<Quota>) {
        let check = crate::policy::check_name("role", &role)
            .and_then(|()| quota.as_ref().map_or(Ok(()), Quota::check));
        if let Err(msg) = check {
            self.send(session, err(ErrorCode::BadRequest, msg, false));
            return;
        }
        let known = self.registry.quotas().contains_key(&role);
        if quota.is_some() && !known && self.registry.quotas().len() >= limits::MAX_QUOTAS {
            let msg = format!("{} roles have a quota already", limits::MAX_QUOTAS);
            self.send(session, err(ErrorCode::Unavailable, msg, false));
            return;
        }
        if quota.is_none() && !known {
            let msg = format!("role '{role}' has no quota");
            self.send(session, err(ErrorCode::NotFound, msg, false));
            return;
        }
        self.propose(
            RegistryOp::QuotaSet { role, quota },
            Then::ReplyDone { session },
        );
    }

    /// Reserve: the resources must be unreserved on the agent (its total less every
    /// reservation there); Unreserve: within the role's dynamic reservation there.
    pub(super) fn change_reservation(
        &mut self,
        session: SessionId,
        agent_id: AgentId,
        role: String,
        resources: Resources,
        reserve: bool,
    ) {
        match self.check_reservation(&agent_id, &role, &resources, reserve) {
            Err((code, msg)) => self.send(session, err(code, msg, false)),
            Ok(()) => {
                let op = if reserve {
                    RegistryOp::Reserved {
                        agent_id,
                        role,
                        resources,
                    }
                } else {
                    RegistryOp::Unreserved {
                        agent_id,
                        role,
                        resources,
                    }
                };
                self.propose(op, Then::ReplyDone { session });
            }
        }
    }

    fn check_reservation(
        &self,
        agent_id: &AgentId,
        role: &str,
        resources: &Resources,
        reserve: bool,
    ) -> Result<(), (ErrorCode, String)> {
        let bad = |msg: String| (ErrorCode::BadRequest, msg);
        crate::policy::check_name("role", role).map_err(bad)?;
        if role == "*" {
            return Err(bad("role '*' is the unreserved pool; name a role".into()));
        }
        if !resources.ports.is_empty() {
            return Err(bad("only cpus, mem and disk can be reserved".into()));
        }
        if resources.is_empty() {
            return Err(bad("nothing to reserve: name cpus, mem or disk".into()));
        }
        let Some(entry) = self.registry.agent(agent_id) else {
            let msg = format!("agent {agent_id} is unknown");
            return Err((ErrorCode::NotFound, msg));
        };
        if reserve {
            let mut unreserved = entry.info.resources.clone();
            unreserved.ports.clear();
            for r in self.registry.reservations_of(agent_id, entry).values() {
                unreserved = unreserved.saturating_sub(r);
            }
            if !unreserved.contains(resources) {
                return Err(bad(format!(
                    "agent {agent_id} has only {unreserved} unreserved; cannot reserve {resources}"
                )));
            }
            let roles = self.registry.dynamic_reservations(agent_id);
            let new_role = roles.is_none_or(|r| !r.contains_key(role));
            if new_role && roles.is_some_and(|r| r.len() >= limits::MAX_RESERVING_ROLES) {
                return Err((
                    ErrorCode::Unavailable,
                    format!("agent {agent_id} has reservations for too many roles"),
                ));
            }
            return Ok(());
        }
        let held = self
            .registry
            .dynamic_reservations(agent_id)
            .and_then(|r| r.get(role))
            .cloned()
            .unwrap_or_default();
        if !held.contains(resources) {
            return Err(bad(format!(
                "role '{role}' has only {held} reserved dynamically on agent {agent_id}; cannot unreserve {resources} (static reservations change with the agent's --resources)"
            )));
        }
        Ok(())
    }

    /// A quota or reservation committed: outstanding offers that may break it are rescinded
    /// and allocation runs.
    pub(super) fn tenancy_committed(&mut self, op: &RegistryOp) {
        match op {
            RegistryOp::QuotaSet { role, .. } => {
                let keys: Vec<u64> = self
                    .offers
                    .iter()
                    .filter(|(_, o)| o.role == *role)
                    .map(|(k, _)| *k)
                    .collect();
                for k in keys {
                    self.remove_offer(k, true);
                }
            }
            RegistryOp::Reserved { agent_id, .. } | RegistryOp::Unreserved { agent_id, .. } => {
                self.rescind_agent_offers(agent_id);
            }
            _ => {}
        }
        self.request_allocation();
    }
}
