//! `corral policy show|set|unset`: the authorization policy (which roles and users each
//! framework principal may use), through the `GetPolicy`/`SetPolicy` operator calls.

use super::client_options;
use crate::cli::PolicyCommand;
use anyhow::{bail, Result};
use proto::{AccessRule, OperatorCall, OperatorReply, PolicyView};

pub async fn run(cmd: PolicyCommand) -> Result<u8> {
    match cmd {
        PolicyCommand::Show { connect, json } => {
            let opts = client_options(&connect)?;
            match framework::operator_call(&opts, OperatorCall::GetPolicy).await? {
                OperatorReply::Policy(view) if json => {
                    println!("{}", serde_json::to_string_pretty(&view)?);
                }
                OperatorReply::Policy(view) => print!("{}", render(&view)),
                other => bail!("unexpected reply: {other:?}"),
            }
            Ok(0)
        }
        PolicyCommand::Set {
            connect,
            principal,
            roles,
            users,
        } => {
            let rule = AccessRule {
                roles: roles.into_iter().collect(),
                users: users.into_iter().collect(),
            };
            let what = format!(
                "principal '{principal}' may now use roles [{}] and users [{}] (and the agent's default user)",
                join(&rule.roles),
                join(&rule.users)
            );
            set(&connect, principal, Some(rule), what).await
        }
        PolicyCommand::Unset { connect, principal } => {
            let what = format!("principal '{principal}' is back on the default rule");
            set(&connect, principal, None, what).await
        }
    }
}

async fn set(
    connect: &crate::cli::ConnectArgs,
    principal: String,
    rule: Option<AccessRule>,
    what: String,
) -> Result<u8> {
    let opts = client_options(connect)?;
    match framework::operator_call(&opts, OperatorCall::SetPolicy { principal, rule }).await? {
        OperatorReply::Done => {
            eprintln!("corral: {what}");
            Ok(0)
        }
        other => bail!("unexpected reply: {other:?}"),
    }
}

fn join<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    names
        .into_iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// One line per principal with a rule, then the default rule.
fn render(view: &PolicyView) -> String {
    let mut out = format!("{:<24} {:<32} USERS\n", "PRINCIPAL", "ROLES");
    for (principal, rule) in &view.rules {
        let users = if rule.users.is_empty() {
            "(agent default)".to_owned()
        } else {
            format!("{},(agent default)", join(&rule.users))
        };
        out.push_str(&format!(
            "{principal:<24} {:<32} {users}\n",
            join(&rule.roles)
        ));
    }
    out.push_str(&format!(
        "{:<24} {:<32} (agent default)\n",
        "(any other)", "*,<its own name>"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_rules_then_the_default_rule() {
        let mut view = PolicyView::default();
        view.rules.insert(
            "batch".into(),
            AccessRule {
                roles: ["prod".to_owned(), "batch".to_owned()].into(),
                users: ["root".to_owned()].into(),
            },
        );
        let text = render(&view);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[1].starts_with("batch") && lines[1].contains("batch,prod"));
        assert!(lines[1].contains("root,(agent default)"), "{text}");
        assert!(lines[2].starts_with("(any other)"), "{text}");
    }
}
