//! `corral quota show|set|unset` and `corral reserve|unreserve`: per-role quotas and dynamic
//! reservations, through the `SetQuota`, `Reserve` and `Unreserve` operator calls (`show`
//! reads the roles of `GetState`).

use super::client_options;
use crate::cli::{ConnectArgs, QuotaCommand, ReserveArgs};
use anyhow::{bail, Context, Result};
use proto::{AgentId, OperatorCall, OperatorReply, Quota, ResourceLimit, Resources, RoleState};

pub async fn run(cmd: QuotaCommand) -> Result<u8> {
    match cmd {
        QuotaCommand::Show { connect, json } => {
            let opts = client_options(&connect)?;
            let roles = match framework::operator_call(&opts, OperatorCall::GetState).await? {
                OperatorReply::State(s) => s.roles,
                other => bail!("unexpected reply: {other:?}"),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&roles)?);
            } else {
                print!("{}", render(&roles));
            }
            Ok(0)
        }
        QuotaCommand::Set {
            connect,
            role,
            guarantee,
            limit,
        } => {
            let guarantee: Resources = guarantee
                .parse()
                .with_context(|| format!("--guarantee '{guarantee}'"))?;
            let limit: ResourceLimit = limit
                .parse()
                .with_context(|| format!("--limit '{limit}'"))?;
            let quota = Quota { guarantee, limit };
            if let Err(e) = quota.check() {
                bail!("{e}");
            }
            let what = format!(
                "role '{role}' has quota guarantee {} limit {}",
                quota.guarantee, quota.limit
            );
            call(
                &connect,
                OperatorCall::SetQuota {
                    role,
                    quota: Some(quota),
                },
                what,
            )
            .await
        }
        QuotaCommand::Unset { connect, role } => {
            let what = format!("role '{role}' has no quota");
            call(&connect, OperatorCall::SetQuota { role, quota: None }, what).await
        }
    }
}

/// `corral reserve` (`reserve`) or `corral unreserve`.
pub async fn reservation(a: ReserveArgs, reserve: bool) -> Result<u8> {
    let resources: Resources = a
        .resources
        .parse()
        .with_context(|| format!("resources '{}'", a.resources))?;
    let agent_id = AgentId(a.agent_id);
    let role = a.role;
    let (what, call_) = if reserve {
        (
            format!("reserved {resources} of agent {agent_id} for role '{role}'"),
            OperatorCall::Reserve {
                agent_id,
                role,
                resources,
            },
        )
    } else {
        (
            format!("returned {resources} of agent {agent_id} from role '{role}' to the unreserved pool"),
            OperatorCall::Unreserve {
                agent_id,
                role,
                resources,
            },
        )
    };
    call(&a.connect, call_, what).await
}

async fn call(connect: &ConnectArgs, call: OperatorCall, what: String) -> Result<u8> {
    let opts = client_options(connect)?;
    match framework::operator_call(&opts, call).await? {
        OperatorReply::Done => {
            eprintln!("corral: {what}");
            Ok(0)
        }
        other => bail!("unexpected reply: {other:?}"),
    }
}

/// One line per role: its quota (or `-`) and what it holds.
fn render(roles: &[RoleState]) -> String {
    let mut out = format!(
        "{:<20} {:<24} {:<24} {:<24} OFFERED\n",
        "ROLE", "GUARANTEE", "LIMIT", "USED"
    );
    for r in roles {
        let (g, l) = match &r.quota {
            Some(q) => (q.guarantee.to_string(), q.limit.to_string()),
            None => ("-".to_owned(), "-".to_owned()),
        };
        out.push_str(&format!(
            "{:<20} {g:<24} {l:<24} {:<24} {}\n",
            r.name,
            r.used.to_string(),
            r.offered
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_shows_quota_and_consumption_per_role() {
        let roles = vec![
            RoleState {
                name: "batch".into(),
                weight: 1.0,
                dominant_share: 0.25,
                starved_ms: 0,
                quota: Some(Quota {
                    guarantee: Resources::new(1000, 0),
                    limit: "cpus:2".parse().unwrap(),
                }),
                used: Resources::new(2000, 64 << 20),
                offered: Resources::default(),
            },
            RoleState {
                name: "web".into(),
                weight: 1.0,
                dominant_share: 0.0,
                starved_ms: 0,
                quota: None,
                used: Resources::default(),
                offered: Resources::default(),
            },
        ];
        let text = render(&roles);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[1].starts_with("batch"), "{text}");
        assert!(lines[1].contains("cpus:1;mem:0B"), "{text}");
        assert!(lines[1].contains("cpus:2 "), "{text}");
        assert!(lines[1].contains("cpus:2;mem:64MiB"), "{text}");
        assert!(
            lines[2].starts_with("web") && lines[2].contains(" - "),
            "{text}"
        );
    }
}
