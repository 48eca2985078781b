//! The authorization policy (issue 14): which roles a framework principal — the name in its
//! certificate — may subscribe with, and which Unix users its tasks may run as. Pure decisions
//! over the rules; the rules themselves live in the registry (replicated, changed only by
//! `RegistryOp::PolicySet`/`PolicySeeded`) or, until the cluster has a policy, in the master's
//! config (`MasterConfig::policy_seed`).
//!
//! A principal with a rule gets exactly what the rule lists. Every other principal gets the
//! **default rule**: role `*` and the role named after itself, and tasks only as the agent's
//! default user (a task that names no user). `root`, like any named user, only where a rule
//! lists it.

use crate::config::limits;
use proto::AccessRule;
use std::collections::BTreeMap;

/// The role every principal may use under the default rule.
pub const DEFAULT_ROLE: &str = "*";

/// Rules by principal.
pub type Rules = BTreeMap<String, AccessRule>;

/// Whether `principal` may subscribe with `role`; the error names the principal, the role and
/// the rule that refused it.
pub fn check_role(rules: &Rules, principal: &str, role: &str) -> Result<(), String> {
    match rules.get(principal) {
        Some(rule) if rule.roles.contains(role) => Ok(()),
        Some(rule) => Err(format!(
            "framework principal '{principal}' may not subscribe with role '{role}': the policy \
             rule for '{principal}' allows roles {} (`corral policy set {principal} --roles ...` \
             changes it)",
            list(rule.roles.iter())
        )),
        None if role == DEFAULT_ROLE || role == principal => Ok(()),
        None => Err(format!(
            "framework principal '{principal}' may not subscribe with role '{role}': the default \
             rule allows only roles '{DEFAULT_ROLE}' and '{principal}' (an operator may allow \
             more with `corral policy set {principal} --roles ...`)"
        )),
    }
}

/// Whether a task (or executor) of `principal` may run as `user`; `None` is the agent's
/// default user, which every principal may use. The error names the principal, the user and
/// the rule.
pub fn check_user(rules: &Rules, principal: &str, user: Option<&str>) -> Result<(), String> {
    let Some(user) = user else {
        return Ok(());
    };
    match rules.get(principal) {
        Some(rule) if rule.users.contains(user) => Ok(()),
        Some(rule) => Err(format!(
            "framework principal '{principal}' may not run tasks as user '{user}': the policy \
             rule for '{principal}' allows users {} besides the agent's default user",
            list(rule.users.iter())
        )),
        None => Err(format!(
            "framework principal '{principal}' may not run tasks as user '{user}': the default \
             rule allows only the agent's default user (name no user){}",
            if user == "root" {
                "; root only where a policy rule allows it explicitly"
            } else {
                ""
            }
        )),
    }
}

/// Checks a rule an operator wants to set: a non-empty principal, names of 1..=MAX_NAME_LEN
/// bytes without control characters, at most `MAX_POLICY_NAMES` roles and users.
pub fn check_rule(principal: &str, rule: Option<&AccessRule>) -> Result<(), String> {
    check_name("principal", principal)?;
    let Some(rule) = rule else {
        return Ok(());
    };
    if rule.roles.len() > limits::MAX_POLICY_NAMES || rule.users.len() > limits::MAX_POLICY_NAMES {
        return Err(format!(
            "a policy rule lists at most {} roles and {} users",
            limits::MAX_POLICY_NAMES,
            limits::MAX_POLICY_NAMES
        ));
    }
    for r in &rule.roles {
        check_name("role", r)?;
    }
    for u in &rule.users {
        check_name("user", u)?;
    }
    Ok(())
}

pub(crate) fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > limits::MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(format!(
            "invalid {what} name '{}': 1..={} bytes, no control characters",
            name.escape_debug(),
            limits::MAX_NAME_LEN
        ));
    }
    Ok(())
}

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<String> = names.map(|n| format!("'{n}'")).collect();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(p: &str, roles: &[&str], users: &[&str]) -> Rules {
        let rule = AccessRule {
            roles: roles.iter().map(|s| (*s).to_owned()).collect(),
            users: users.iter().map(|s| (*s).to_owned()).collect(),
        };
        [(p.to_owned(), rule)].into_iter().collect()
    }

    #[test]
    fn default_rule_allows_star_and_own_role_and_default_user_only() {
        let none = Rules::new();
        assert!(check_role(&none, "batch", "*").is_ok());
        assert!(check_role(&none, "batch", "batch").is_ok());
        let e = check_role(&none, "batch", "prod").unwrap_err();
        assert!(e.contains("'batch'") && e.contains("'prod'") && e.contains("default rule"));
        assert!(check_user(&none, "batch", None).is_ok());
        let e = check_user(&none, "batch", Some("root")).unwrap_err();
        assert!(e.contains("'root'") && e.contains("default rule") && e.contains("explicitly"));
        assert!(check_user(&none, "batch", Some("nobody")).is_err());
    }

    #[test]
    fn a_rule_replaces_the_default_for_its_principal_only() {
        let r = rules("batch", &["prod"], &["daemon"]);
        assert!(check_role(&r, "batch", "prod").is_ok());
        let e = check_role(&r, "batch", "*").unwrap_err();
        assert!(
            e.contains("policy rule for 'batch'") && e.contains("'prod'"),
            "{e}"
        );
        assert!(check_user(&r, "batch", Some("daemon")).is_ok());
        assert!(check_user(&r, "batch", None).is_ok());
        let e = check_user(&r, "batch", Some("root")).unwrap_err();
        assert!(
            e.contains("policy rule for 'batch'") && e.contains("'daemon'"),
            "{e}"
        );
        // Another principal keeps the default rule.
        assert!(check_role(&r, "web", "web").is_ok());
        assert!(check_role(&r, "web", "prod").is_err());
        assert!(check_user(&rules("ops", &[], &["root"]), "ops", Some("root")).is_ok());
    }

    #[test]
    fn rules_with_bad_names_are_refused() {
        assert!(check_rule("", None).is_err());
        assert!(check_rule("batch", None).is_ok());
        let bad = rules("batch", &[""], &[]);
        assert!(check_rule("batch", bad.get("batch")).is_err());
        let bad = rules("batch", &["a\nb"], &[]);
        assert!(check_rule("batch", bad.get("batch")).is_err());
        let long = "x".repeat(limits::MAX_NAME_LEN + 1);
        let bad = rules("batch", &[], &[long.as_str()]);
        assert!(check_rule("batch", bad.get("batch")).is_err());
    }
}
