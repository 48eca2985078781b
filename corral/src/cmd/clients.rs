//! `corral state`, `corral logs`, `corral kill`.

use super::client_options;
use crate::cli::{AgentIdArgs, KillArgs, LogsArgs, MastersCommand, StateArgs, TeardownArgs};
use anyhow::{bail, Result};
use proto::{format_size, ClusterState, LogStream, OperatorCall, OperatorReply, Resources, TaskId};
use std::io::Write;
use std::time::Duration;

pub async fn state(args: StateArgs) -> Result<u8> {
    let opts = client_options(&args.connect)?;
    let state = match framework::operator_call(&opts, OperatorCall::GetState).await? {
        OperatorReply::State(s) => s,
        other => bail!("unexpected reply to GetState: {other:?}"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&*state)?);
    } else {
        print!("{}", render(&state));
    }
    Ok(0)
}

fn res(r: &Resources) -> String {
    format!("{:.2} cpu, {}", r.cpus(), format_size(r.mem_bytes))
}

/// The human-readable `corral state`.
pub fn render(s: &ClusterState) -> String {
    let mut out = String::new();
    let m = &s.masters;
    out.push_str(&format!(
        "MASTERS  leader={} term={} members={}\n",
        m.leader.as_deref().unwrap_or("-"),
        m.term,
        m.members.len().max(1)
    ));
    for member in &m.members {
        out.push_str(&format!(
            "  {:<4} {:<24} {}{}\n",
            member.id,
            member.address,
            if member.is_leader {
                "leader"
            } else {
                "follower"
            },
            member.lag.map(|l| format!(" lag={l}")).unwrap_or_default()
        ));
    }
    out.push_str(&format!("\nAGENTS ({})\n", s.agents.len()));
    out.push_str(&format!(
        "  {:<22} {:<20} {:<12} {:<22} {:<22} {:<22}\n",
        "ID", "HOSTNAME", "STATUS", "TOTAL", "USED", "OFFERED"
    ));
    for a in &s.agents {
        out.push_str(&format!(
            "  {:<22} {:<20} {:<12} {:<22} {:<22} {:<22}\n",
            a.id.as_str(),
            a.hostname,
            format!("{:?}", a.status),
            res(&a.total),
            res(&a.used),
            res(&a.offered)
        ));
    }
    out.push_str(&format!("\nFRAMEWORKS ({})\n", s.frameworks.len()));
    out.push_str(&format!(
        "  {:<22} {:<20} {:<12} {:<8} {:<22} {:<22}\n",
        "ID", "NAME", "ROLES", "SHARE", "USED", "OFFERED"
    ));
    for f in &s.frameworks {
        out.push_str(&format!(
            "  {:<22} {:<20} {:<12} {:<8} {:<22} {:<22}\n",
            f.id.as_str(),
            f.name,
            f.roles.join(","),
            format!("{:.3}", f.dominant_share),
            res(&f.used),
            res(&f.offered)
        ));
    }
    if !s.roles.is_empty() {
        out.push_str(&format!("\nROLES ({})\n", s.roles.len()));
        for r in &s.roles {
            out.push_str(&format!(
                "  {:<20} weight={:<6} share={:.3} starved={}ms\n",
                r.name, r.weight, r.dominant_share, r.starved_ms
            ));
        }
    }
    out.push_str(&format!("\nTASKS ({})\n", s.tasks.len()));
    out.push_str(&format!(
        "  {:<28} {:<22} {:<22} {:<16} {}\n",
        "ID", "FRAMEWORK", "AGENT", "STATE", "DETAIL"
    ));
    for t in &s.tasks {
        let mut detail = String::new();
        if let Some(u) = &t.usage {
            detail.push_str(&format!(
                "mem {} pids {} cpu {:.1}s ",
                format_size(u.mem_current_bytes),
                u.pids_current,
                (u.cpu_user_us + u.cpu_system_us) as f64 / 1e6
            ));
        }
        if let Some(code) = t.exit_code {
            detail.push_str(&format!("exit {code} "));
        }
        if let Some(l) = &t.limitation {
            detail.push_str(&format!(
                "{:?} limit {} peak {} ",
                l.resource,
                format_size(l.limit),
                l.peak.map(format_size).unwrap_or_else(|| "-".into())
            ));
        }
        if let Some(m) = &t.message {
            detail.push_str(m);
        }
        out.push_str(&format!(
            "  {:<28} {:<22} {:<22} {:<16} {}\n",
            t.id.as_str(),
            t.framework_id.as_str(),
            t.agent_id.as_str(),
            t.state.name(),
            detail.trim_end()
        ));
    }
    out
}

pub async fn logs(args: LogsArgs) -> Result<u8> {
    let opts = client_options(&args.connect)?;
    let task_id = TaskId::new(args.task_id.clone());
    let stream = if args.stderr {
        LogStream::Stderr
    } else {
        LogStream::Stdout
    };
    let mut offset = 0u64;
    loop {
        let chunk = framework::read_log(&opts, &task_id, stream, offset, 1 << 20).await?;
        let n = chunk.data.len() as u64;
        {
            let mut out = std::io::stdout().lock();
            out.write_all(&chunk.data)?;
            out.flush()?;
        }
        offset = chunk.offset + n;
        if chunk.eof || (!args.follow && n == 0) {
            return Ok(0);
        }
        if n == 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

pub async fn kill(args: KillArgs) -> Result<u8> {
    let opts = client_options(&args.connect)?;
    let task_id = TaskId::new(args.task_id.clone());
    match framework::operator_call(
        &opts,
        OperatorCall::KillTask {
            task_id: task_id.clone(),
        },
    )
    .await?
    {
        OperatorReply::Done => {
            eprintln!("corral: kill requested for task {task_id}");
            Ok(0)
        }
        other => bail!("unexpected reply to KillTask: {other:?}"),
    }
}

pub enum AgentOp {
    Drain,
    Deactivate,
    Reactivate,
}

pub async fn agent_call(args: AgentIdArgs, op: AgentOp) -> Result<u8> {
    let opts = client_options(&args.connect)?;
    let agent_id = proto::AgentId::new(args.agent_id.clone());
    let (call, what) = match op {
        AgentOp::Drain => (
            OperatorCall::DrainAgent {
                agent_id: agent_id.clone(),
            },
            "draining",
        ),
        AgentOp::Deactivate => (
            OperatorCall::DeactivateAgent {
                agent_id: agent_id.clone(),
            },
            "deactivated",
        ),
        AgentOp::Reactivate => (
            OperatorCall::ReactivateAgent {
                agent_id: agent_id.clone(),
            },
            "active",
        ),
    };
    match framework::operator_call(&opts, call).await? {
        OperatorReply::Done => {
            eprintln!("corral: agent {agent_id} is now {what}");
            Ok(0)
        }
        other => bail!("unexpected reply: {other:?}"),
    }
}

pub async fn teardown(args: TeardownArgs) -> Result<u8> {
    let opts = client_options(&args.connect)?;
    let framework_id = proto::FrameworkId::new(args.framework_id.clone());
    let call = OperatorCall::TeardownFramework {
        framework_id: framework_id.clone(),
    };
    match framework::operator_call(&opts, call).await? {
        OperatorReply::Done => {
            eprintln!("corral: framework {framework_id} torn down");
            Ok(0)
        }
        other => bail!("unexpected reply: {other:?}"),
    }
}

pub async fn masters(cmd: MastersCommand) -> Result<u8> {
    let (connect, call, what) = match cmd {
        MastersCommand::Add { connect, member } => {
            let (id, node) = super::daemons::parse_peer(&member)?;
            let what = format!("master {id} ({node}) added");
            (
                connect,
                OperatorCall::AddMaster {
                    id,
                    name: node.name,
                    address: node.addr,
                },
                what,
            )
        }
        MastersCommand::Remove { connect, id } => (
            connect,
            OperatorCall::RemoveMaster { id },
            format!("master {id} removed"),
        ),
    };
    let mut opts = client_options(&connect)?;
    // Adding a learner waits until it caught up.
    opts.connect_timeout = Duration::from_secs(60);
    match framework::operator_call(&opts, call).await? {
        OperatorReply::Done => {
            eprintln!("corral: {what}");
            Ok(0)
        }
        other => bail!("unexpected reply: {other:?}"),
    }
}
