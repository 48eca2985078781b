//! Sessions and authorization: the role matrix, admitting agents and frameworks by id, refusing and
//! dropping sessions.

use super::*;

impl Master {
    /// Admits an agent or a framework (see [`Admitted`]): the id it asked for, checked, or a
    /// fresh one. `None` when refused; the session is closed then.
    pub(super) fn admit<I: Admitted>(
        &mut self,
        session: SessionId,
        principal: &str,
        requested: Option<I>,
    ) -> Option<I> {
        if self.in_flight_full() {
            self.refuse(
                session,
                ErrorCode::Unavailable,
                "master is overloaded".into(),
            );
            return None;
        }
        let kind = I::KIND;
        let id = match requested {
            Some(id) => {
                if !I::valid(&id) {
                    self.refuse(session, ErrorCode::BadRequest, format!("invalid {kind} id"));
                    return None;
                }
                if I::removed(&self.registry, &id) {
                    let msg = format!("{kind} {id} {}", I::REMOVED);
                    self.refuse(session, ErrorCode::NotFound, msg);
                    return None;
                }
                if let Some(owner) = I::owner(&self.registry, &id) {
                    if owner != principal {
                        let msg = format!(
                            "{kind} {id} belongs to '{owner}', not to {kind} '{principal}'"
                        );
                        self.refuse(session, ErrorCode::Forbidden, msg);
                        return None;
                    }
                }
                id
            }
            None => loop {
                let id = I::generated(self.next_id(I::LETTER));
                if !I::known(&self.registry, &id) && !I::removed(&self.registry, &id) {
                    break id;
                }
            },
        };
        if !I::known(&self.registry, &id) && I::count(&self.registry) >= I::LIMIT {
            let msg = format!("cluster has too many {kind}s");
            self.refuse(session, ErrorCode::Unavailable, msg);
            return None;
        }
        Some(id)
    }

    /// Refuses a call: a fatal error, then the stream is closed.
    pub(super) fn refuse(&mut self, session: SessionId, code: ErrorCode, msg: String) {
        self.send(session, err(code, msg.clone(), true));
        self.outputs.push_back(Output::Close {
            session,
            reason: msg,
        });
        self.drop_session(session);
    }

    pub(super) fn drop_session(&mut self, session: SessionId) {
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
        self.log_requests.retain(|_, r| r.session != session);
        match s.kind {
            SessionKind::New => {}
            SessionKind::Agent(id) => {
                let is_current = self
                    .agents
                    .get(&id)
                    .is_some_and(|a| a.session == Some(session));
                if is_current {
                    self.agent_session_ended(&id);
                    self.rescind_agent_offers(&id);
                }
            }
            SessionKind::Framework(id) => {
                let is_current = self
                    .frameworks
                    .get(&id)
                    .is_some_and(|f| f.session == Some(session));
                if is_current {
                    self.framework_disconnected(&id);
                }
            }
        }
    }
}

pub(super) fn call_name(frame: &ClientFrame) -> &'static str {
    match frame {
        ClientFrame::Agent(m) => match m {
            AgentToMaster::Register { .. } => "agent Register",
            AgentToMaster::Heartbeat => "agent Heartbeat",
            AgentToMaster::StatusUpdate { .. } => "agent StatusUpdate",
            AgentToMaster::Usage { .. } => "agent Usage",
            AgentToMaster::LogChunk { .. } => "agent LogChunk",
            AgentToMaster::ExecutorMessage { .. } => "agent ExecutorMessage",
        },
        ClientFrame::Framework(c) => match c {
            FrameworkCall::Subscribe { .. } => "framework Subscribe",
            FrameworkCall::Accept { .. } => "framework Accept",
            FrameworkCall::Decline { .. } => "framework Decline",
            FrameworkCall::Revive { .. } => "framework Revive",
            FrameworkCall::Suppress { .. } => "framework Suppress",
            FrameworkCall::Kill { .. } => "framework Kill",
            FrameworkCall::Acknowledge { .. } => "framework Acknowledge",
            FrameworkCall::Reconcile { .. } => "framework Reconcile",
            FrameworkCall::Message { .. } => "framework Message",
            FrameworkCall::Teardown => "framework Teardown",
            FrameworkCall::Heartbeat => "framework Heartbeat",
        },
        ClientFrame::Operator(c) => match c {
            OperatorCall::GetState => "operator GetState",
            OperatorCall::DrainAgent { .. } => "operator DrainAgent",
            OperatorCall::DeactivateAgent { .. } => "operator DeactivateAgent",
            OperatorCall::ReactivateAgent { .. } => "operator ReactivateAgent",
            OperatorCall::TeardownFramework { .. } => "operator TeardownFramework",
            OperatorCall::KillTask { .. } => "operator KillTask",
            OperatorCall::ReadLog { .. } => "operator ReadLog",
            OperatorCall::AddMaster { .. } => "operator AddMaster",
            OperatorCall::RemoveMaster { .. } => "operator RemoveMaster",
            OperatorCall::GetPolicy => "operator GetPolicy",
            OperatorCall::SetPolicy { .. } => "operator SetPolicy",
            OperatorCall::SetQuota { .. } => "operator SetQuota",
            OperatorCall::Reserve { .. } => "operator Reserve",
            OperatorCall::Unreserve { .. } => "operator Unreserve",
            OperatorCall::SubscribeEvents { .. } => "operator SubscribeEvents",
        },
        ClientFrame::Certificates(c) => match c {
            proto::CertificateCall::Join { .. } => "certificates Join",
            proto::CertificateCall::Renew { .. } => "certificates Renew",
            proto::CertificateCall::RevokeJoinToken { .. } => "certificates RevokeJoinToken",
        },
        ClientFrame::WatchLeader => "WatchLeader",
    }
}

/// The role a frame's kind belongs to, for refusal messages.
pub(super) fn required_role(frame: &ClientFrame) -> Role {
    match frame {
        ClientFrame::Agent(_) => Role::Agent,
        ClientFrame::Framework(_) => Role::Framework,
        ClientFrame::Operator(_) | ClientFrame::Certificates(_) => Role::Operator,
        // Never refused: every role may watch (see `authorized`).
        ClientFrame::WatchLeader => Role::Operator,
    }
}

/// The role-based call matrix.
pub fn authorized(role: Role, frame: &ClientFrame) -> bool {
    matches!(
        (role, frame),
        (Role::Agent, ClientFrame::Agent(_))
            | (Role::Framework, ClientFrame::Framework(_))
            | (Role::Operator, ClientFrame::Operator(_))
            | (_, ClientFrame::WatchLeader)
            | (
                Role::Framework,
                ClientFrame::Operator(OperatorCall::KillTask { .. } | OperatorCall::ReadLog { .. })
            )
    )
}

/// Agents and frameworks are admitted alike ([`Master::admit`]): a client may name the id it
/// had, which must be well-formed, not removed, and its own (same certificate name); without
/// one it gets a fresh id; a new id must fit the kind's named limit. What differs per kind:
pub(super) trait Admitted: Clone + std::fmt::Display {
    /// For messages: "agent", "framework".
    const KIND: &'static str;
    /// The letter of generated ids (`<prefix>-A1`, `<prefix>-F1`).
    const LETTER: char;
    const LIMIT: usize;
    /// What a client whose id was removed is told (after "KIND ID").
    const REMOVED: &'static str;
    fn generated(id: String) -> Self;
    fn valid(id: &Self) -> bool;
    fn known(registry: &Registry, id: &Self) -> bool;
    fn removed(registry: &Registry, id: &Self) -> bool;
    /// The certificate name a known id belongs to (`None`: unknown, or anyone may claim it).
    fn owner<'r>(registry: &'r Registry, id: &Self) -> Option<&'r str>;
    fn count(registry: &Registry) -> usize;
}

impl Admitted for AgentId {
    const KIND: &'static str = "agent";
    const LETTER: char = 'A';
    const LIMIT: usize = limits::MAX_AGENTS;
    const REMOVED: &'static str = "was removed from the cluster; start it afresh";
    fn generated(id: String) -> Self {
        AgentId(id)
    }
    fn valid(_: &Self) -> bool {
        true
    }
    fn known(registry: &Registry, id: &Self) -> bool {
        registry.agents().contains_key(id)
    }
    fn removed(registry: &Registry, id: &Self) -> bool {
        registry.removed_agents().contains(id)
    }
    fn owner<'r>(registry: &'r Registry, id: &Self) -> Option<&'r str> {
        registry.agents().get(id).map(|a| a.principal.as_str())
    }
    fn count(registry: &Registry) -> usize {
        registry.agents().len()
    }
}

impl Admitted for FrameworkId {
    const KIND: &'static str = "framework";
    const LETTER: char = 'F';
    const LIMIT: usize = limits::MAX_FRAMEWORKS;
    const REMOVED: &'static str = "was removed; subscribe without an id";
    fn generated(id: String) -> Self {
        FrameworkId(id)
    }
    fn valid(id: &Self) -> bool {
        !id.0.is_empty() && id.0.len() <= limits::MAX_NAME_LEN
    }
    fn known(registry: &Registry, id: &Self) -> bool {
        registry.frameworks().contains_key(id)
    }
    fn removed(registry: &Registry, id: &Self) -> bool {
        registry.framework_removed(id)
    }
    fn owner<'r>(registry: &'r Registry, id: &Self) -> Option<&'r str> {
        registry.frameworks().get(id)?.principal.as_deref()
    }
    fn count(registry: &Registry) -> usize {
        registry.frameworks().len()
    }
}
