//! The authorization policy's wire form: which roles a framework principal (the name in its
//! certificate) may subscribe with, and which Unix users its tasks may run as. The master holds
//! the policy (replicated) and decides; see `master_core::policy`.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What one framework principal may use. A principal with a rule gets exactly what it lists;
/// one without gets the default rule (role `*` and the role named after itself; the agent's
/// default user only).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRule {
    /// Roles it may subscribe with.
    #[serde(default)]
    pub roles: BTreeSet<String>,
    /// Unix users its tasks (and executors) may name. A task that names no user runs as the
    /// agent's default user, which every principal may; `root` only when listed here.
    #[serde(default)]
    pub users: BTreeSet<String>,
}

/// The policy in force, as `corral policy show` prints it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyView {
    /// Rules by principal; every other principal gets the default rule.
    pub rules: BTreeMap<String, AccessRule>,
    /// True once an operator call or the master's config file set the policy (a cluster that
    /// never had one runs on the default rule alone).
    #[serde(default)]
    pub configured: bool,
}
