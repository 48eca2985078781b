//! `corral state`, `corral logs`, `corral kill`.

use super::client_options;
use crate::cli::{AgentIdArgs, KillArgs, LogsArgs, MastersCommand, StateArgs, TeardownArgs};
use anyhow::{bail, Result};
use proto::{
    format_size, ClusterState, FrameworkId, LogStream, NodePressure, OperatorCall, OperatorReply,
    Resources, StatusReason, TaskId, TaskSummary,
};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Terminal tasks the text output shows per framework, the most recent (`--json` has them all).
const COMPLETED_TASKS_SHOWN_PER_FRAMEWORK: usize = 5;
/// Completed frameworks the text output shows, the most recently removed.
const COMPLETED_FRAMEWORKS_SHOWN: usize = 10;

pub async fn state(args: StateArgs) -> Result<u8> {
    let opts = client_options(&args.connect)?;
    let state = match framework::operator_call(&opts, OperatorCall::GetState).await? {
        OperatorReply::State(s) => s,
        other => bail!("unexpected reply to GetState: {other:?}"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&*state)?);
    } else {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        print!("{}", render(&state, now_ms));
    }
    Ok(0)
}

/// A node's pressure in one column: the `some` averages over 10 s (`--json` has `full` too).
fn psi(p: Option<&NodePressure>) -> String {
    match p {
        Some(p) => format!(
            "psi cpu {}% mem {}% io {}%",
            NodePressure::percent(p.cpu_some_avg10),
            NodePressure::percent(p.memory_some_avg10),
            NodePressure::percent(p.io_some_avg10)
        ),
        None => "-".to_owned(),
    }
}

fn res(r: &Resources) -> String {
    format!("{:.2} cpu, {}", r.cpus(), format_size(r.mem_bytes))
}

/// How long ago `at_ms` was, compactly.
fn ago(now_ms: u64, at_ms: u64) -> String {
    let secs = now_ms.saturating_sub(at_ms) / 1000;
    match secs {
        0..=119 => format!("{secs}s ago"),
        120..=7_199 => format!("{}m ago", secs / 60),
        7_200..=172_799 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

pub(crate) fn reason_text(r: StatusReason) -> &'static str {
    match r {
        StatusReason::CommandExited => "command exited",
        StatusReason::MemoryLimit => "memory limit",
        StatusReason::PidsLimit => "pids limit",
        StatusReason::KilledByFramework => "killed by framework",
        StatusReason::KilledByOperator => "killed by operator",
        StatusReason::Reconciliation => "reconciliation",
        StatusReason::AgentUnreachable => "agent unreachable",
        StatusReason::AgentRemoved => "agent removed",
        StatusReason::AgentRestarted => "agent restarted",
        StatusReason::FrameworkRemoved => "framework removed",
        StatusReason::InvalidOffers => "invalid offers",
        StatusReason::TaskInvalid => "task invalid",
        StatusReason::TaskUnauthorized => "task unauthorized",
        StatusReason::ExecutorTerminated => "executor terminated",
        StatusReason::ContainerLaunchFailed => "container launch failed",
        StatusReason::ResourcesUnavailable => "resources unavailable",
        StatusReason::MasterOverloaded => "master overloaded",
        StatusReason::AgentDraining => "agent draining",
    }
}

/// The tasks the text output lists: every live task, and the last
/// `COMPLETED_TASKS_SHOWN_PER_FRAMEWORK` terminal ones of each live framework and of each
/// completed framework shown. Keeps the snapshot's order.
fn shown_tasks<'a>(
    s: &'a ClusterState,
    completed_shown: &BTreeSet<&FrameworkId>,
) -> Vec<&'a TaskSummary> {
    let live_fw: BTreeSet<&FrameworkId> = s.frameworks.iter().map(|f| &f.id).collect();
    let mut terminal: BTreeMap<&FrameworkId, usize> = BTreeMap::new();
    for t in s.tasks.iter().filter(|t| t.state.is_terminal()) {
        *terminal.entry(&t.framework_id).or_default() += 1;
    }
    let mut seen: BTreeMap<&FrameworkId, usize> = BTreeMap::new();
    s.tasks
        .iter()
        .filter(|t| {
            if !t.state.is_terminal() {
                return true;
            }
            let fw = &t.framework_id;
            if !live_fw.contains(fw) && !completed_shown.contains(fw) {
                return false;
            }
            let n = seen.entry(fw).or_default();
            *n += 1;
            *n + COMPLETED_TASKS_SHOWN_PER_FRAMEWORK > terminal[fw]
        })
        .collect()
}

/// The human-readable `corral state`; `now_ms` (wall clock) dates completed frameworks.
pub fn render(s: &ClusterState, now_ms: u64) -> String {
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
        "  {:<22} {:<20} {:<12} {:<22} {:<22} {:<22} {}\n",
        "ID", "HOSTNAME", "STATUS", "TOTAL", "USED", "OFFERED", "PRESSURE"
    ));
    for a in &s.agents {
        out.push_str(&format!(
            "  {:<22} {:<20} {:<12} {:<22} {:<22} {:<22} {}\n",
            a.id.as_str(),
            a.hostname,
            format!("{:?}", a.status),
            res(&a.total),
            res(&a.used),
            res(&a.offered),
            psi(a.pressure.as_ref())
        ));
        if !a.reserved.is_empty() {
            out.push_str(&format!(
                "    reserved {}{}\n",
                proto::format_reserved(&a.reserved),
                if a.reserved_dynamic.is_empty() {
                    String::new()
                } else {
                    format!(" (dynamic {})", proto::format_reserved(&a.reserved_dynamic))
                }
            ));
        }
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
    let completed = &s.completed_frameworks;
    let skip = completed.len().saturating_sub(COMPLETED_FRAMEWORKS_SHOWN);
    let completed_shown: BTreeSet<&FrameworkId> = completed[skip..].iter().map(|c| &c.id).collect();
    if !completed.is_empty() {
        out.push_str(&format!("\nCOMPLETED FRAMEWORKS ({})\n", completed.len()));
        out.push_str(&format!(
            "  {:<22} {:<20} {:<12} {}\n",
            "ID", "NAME", "ROLES", "REMOVED"
        ));
        if skip > 0 {
            out.push_str(&format!("  ({skip} older not shown; --json lists them)\n"));
        }
        for c in &completed[skip..] {
            out.push_str(&format!(
                "  {:<22} {:<20} {:<12} {}\n",
                c.id.as_str(),
                c.name,
                c.roles.join(","),
                ago(now_ms, c.removed_at_ms)
            ));
        }
    }
    if !s.roles.is_empty() {
        out.push_str(&format!("\nROLES ({})\n", s.roles.len()));
        for r in &s.roles {
            out.push_str(&format!(
                "  {:<20} weight={:<6} share={:.3} starved={}ms used={} offered={}{}\n",
                r.name,
                r.weight,
                r.dominant_share,
                r.starved_ms,
                r.used,
                r.offered,
                r.quota
                    .as_ref()
                    .map(|q| format!(" guarantee={} limit={}", q.guarantee, q.limit))
                    .unwrap_or_default()
            ));
        }
    }
    let shown = shown_tasks(s, &completed_shown);
    let live = s.tasks.iter().filter(|t| !t.state.is_terminal()).count();
    out.push_str(&format!(
        "\nTASKS ({} live, {} completed)\n",
        live,
        s.tasks.len() - live
    ));
    if shown.len() < s.tasks.len() {
        out.push_str(&format!(
            "  (the last {COMPLETED_TASKS_SHOWN_PER_FRAMEWORK} completed per framework shown; \
             --json lists all {})\n",
            s.tasks.len()
        ));
    }
    out.push_str(&format!(
        "  {:<28} {:<22} {:<22} {:<16} {}\n",
        "ID", "FRAMEWORK", "AGENT", "STATE", "DETAIL"
    ));
    for t in shown {
        let mut detail = String::new();
        if let Some(r) = t.reason {
            if t.state.is_terminal() {
                detail.push_str(&format!("[{}] ", reason_text(r)));
            }
        }
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
            // The forensics say what the agent's message would (`--json` has both).
            detail.push_str(&format!(
                "{:?} limit {} peak {} ",
                l.resource,
                format_size(l.limit),
                l.peak.map(format_size).unwrap_or_else(|| "-".into())
            ));
            for (k, v) in l.events.iter().filter(|(_, v)| **v > 0) {
                detail.push_str(&format!("{k}={v} "));
            }
        } else if let Some(m) = &t.message {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{
        AgentId, CompletedFrameworkState, Limitation, LimitedResource, TaskState, TaskSummary,
    };

    fn task(id: &str, fw: &str, state: TaskState) -> TaskSummary {
        TaskSummary {
            id: TaskId::new(id),
            name: id.to_owned(),
            framework_id: FrameworkId::new(fw),
            agent_id: AgentId::new("a1"),
            state,
            resources: Resources::default(),
            reason: None,
            message: None,
            exit_code: None,
            limitation: None,
            usage: None,
        }
    }

    fn completed(id: &str, removed_at_ms: u64) -> CompletedFrameworkState {
        CompletedFrameworkState {
            id: FrameworkId::new(id),
            name: "corral-run".into(),
            principal: "fw".into(),
            roles: vec!["*".into()],
            removed_at_ms,
        }
    }

    #[test]
    fn agents_show_their_pressure() {
        let agent = |id: &str, pressure| proto::AgentState {
            id: AgentId::new(id),
            hostname: "node".into(),
            status: proto::AgentStatus::Active,
            total: Resources::default(),
            used: Resources::default(),
            offered: Resources::default(),
            attributes: BTreeMap::new(),
            version: String::new(),
            pressure,
            reserved: BTreeMap::new(),
            reserved_dynamic: BTreeMap::new(),
        };
        let mut s = ClusterState::default();
        let hot = NodePressure {
            cpu_some_avg10: 250,
            memory_some_avg10: 41,
            memory_full_avg10: 10,
            io_some_avg10: 1200,
            io_full_avg10: 700,
        };
        s.agents.push(agent("a1", Some(hot)));
        s.agents.push(agent("a2", None));
        let text = render(&s, 0);
        let line = |id: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(id))
                .unwrap_or_default()
                .to_owned()
        };
        assert!(text.contains("PRESSURE"), "{text}");
        assert!(
            line("a1").ends_with("psi cpu 2.50% mem 0.41% io 12.00%"),
            "{text}"
        );
        assert!(line("a2").ends_with(" -"), "{text}");
    }

    #[test]
    fn completed_tasks_show_their_reason_and_limitation_without_flooding() {
        let mut s = ClusterState::default();
        let mut oom = task("hog", "c0", TaskState::Failed);
        oom.reason = Some(StatusReason::MemoryLimit);
        oom.limitation = Some(Limitation {
            resource: LimitedResource::Memory,
            limit: 32 << 20,
            peak: Some(32 << 20),
            events: [("oom_kill".to_owned(), 1), ("failcnt".to_owned(), 0)]
                .into_iter()
                .collect(),
        });
        oom.message = Some("killed by the kernel".into());
        s.tasks.push(oom);
        s.completed_frameworks.push(completed("c0", 40_000));
        // An older completed framework with many tasks: only its last few are listed.
        for i in 0..20 {
            s.tasks
                .push(task(&format!("old-{i:02}"), "c1", TaskState::Finished));
        }
        s.completed_frameworks.push(completed("c1", 50_000));
        for i in 0..COMPLETED_FRAMEWORKS_SHOWN {
            s.completed_frameworks
                .push(completed(&format!("n{i}"), 60_000));
        }
        let text = render(&s, 100_000);
        assert!(text.contains("COMPLETED FRAMEWORKS (12)"), "{text}");
        assert!(text.contains("2 older not shown"), "{text}");
        assert!(!text.contains("  c0 "), "{text}");
        assert!(!text.contains("hog"), "c0 is not among the shown: {text}");
        assert!(!text.contains("old-"), "c1 is not among the shown: {text}");
        assert!(text.contains("TASKS (0 live, 21 completed)"), "{text}");

        s.completed_frameworks.truncate(2);
        let text = render(&s, 100_000);
        assert!(text.contains("  c0 ") && text.contains("60s ago"), "{text}");
        let hog = text
            .lines()
            .find(|l| l.trim_start().starts_with("hog"))
            .expect("the OOM-killed task is listed");
        assert!(hog.contains("TASK_FAILED"), "{hog}");
        assert!(hog.contains("[memory limit]"), "{hog}");
        assert!(hog.contains("limit 32MiB peak 32MiB oom_kill=1"), "{hog}");
        assert!(
            !hog.contains("failcnt") && !hog.contains("killed by"),
            "{hog}"
        );
        let old: Vec<&str> = text.lines().filter(|l| l.contains("old-")).collect();
        assert_eq!(old.len(), COMPLETED_TASKS_SHOWN_PER_FRAMEWORK, "{text}");
        assert!(
            old[old.len() - 1].contains("old-19"),
            "the most recent: {text}"
        );
        assert!(text.contains("--json lists all 21"), "{text}");
    }
}
