//! `corral events`: follows agent, framework and task changes, one line each (or one JSON
//! object per line with `--json`), resuming at the next leader after a failover with nothing
//! lost or repeated (`framework::EventStream`).

use super::client_options;
use super::clients::reason_text;
use crate::cli::EventsArgs;
use anyhow::{Context, Result};
use framework::{EventStream, EventStreamError, StreamItem};
use proto::{format_size, ClusterEvent, EventCursor, TaskSummary};
use std::io::Write;

pub async fn events(args: EventsArgs) -> Result<u8> {
    let opts = client_options(&args.connect)?;
    let after = args
        .after
        .as_deref()
        .map(str::parse::<EventCursor>)
        .transpose()?;
    let mut stream = EventStream::new(opts, after);
    let mut out = std::io::stdout().lock();
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            _ = super::shutdown_signal() => return Ok(0),
        };
        let item = match item {
            Ok(item) => item,
            Err(EventStreamError::TooSlow(msg)) => {
                eprintln!("corral: error: {msg}");
                return Ok(1);
            }
            Err(e) => return Err(e).context("cannot follow the cluster's events"),
        };
        let cursor = match &item {
            StreamItem::Event(e) => Some(e.cursor),
            _ => None,
        };
        let text = if args.json {
            let v = match &item {
                StreamItem::Subscribed(s) => webui::json::subscribed(s),
                StreamItem::Resumed { master, after } => webui::json::resumed(master, after),
                StreamItem::Event(e) => webui::json::stamped(e),
            };
            format!("{v}\n")
        } else {
            render(&item)
        };
        // A closed stdout (say `| head`) ends the command quietly.
        if out
            .write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .is_err()
        {
            return Ok(0);
        }
        // Printed: a resumption continues after it.
        if let Some(c) = cursor {
            stream.acknowledge(c);
        }
    }
}

fn render(item: &StreamItem) -> String {
    match item {
        StreamItem::Subscribed(s) => {
            let mut text = String::new();
            if let Some(note) = &s.note {
                eprintln!("corral: {note}");
            }
            for e in &s.state {
                text.push_str(&format!("{:<10} {}\n", "state", line(e)));
            }
            text.push_str(&format!(
                "{:<10} SUBSCRIBED (following from here)\n",
                s.cursor
            ));
            text
        }
        StreamItem::Resumed { master, after } => {
            eprintln!("corral: resumed at {master} after {after}");
            String::new()
        }
        StreamItem::Event(e) => format!("{:<10} {}\n", e.cursor.to_string(), line(&e.event)),
    }
}

fn task_line(t: &TaskSummary) -> String {
    let mut s = format!(
        "task {} ({}) of framework {} on agent {}: {}",
        t.id, t.name, t.framework_id, t.agent_id, t.state
    );
    if let Some(r) = t.reason {
        s.push_str(&format!(", {}", reason_text(r)));
    }
    if let Some(code) = t.exit_code {
        s.push_str(&format!(", exit code {code}"));
    }
    if let Some(m) = &t.message {
        s.push_str(&format!(": {m}"));
    }
    s
}

/// One change, in words.
fn line(e: &ClusterEvent) -> String {
    let kind = e.kind();
    match e {
        ClusterEvent::AgentAdded(a) | ClusterEvent::AgentUpdated(a) => format!(
            "{kind:<17} agent {} ({}) {:?}: {:.2} cpu, {}",
            a.id,
            a.hostname,
            a.status,
            a.total.cpus(),
            format_size(a.total.mem_bytes)
        ),
        ClusterEvent::AgentRemoved { agent_id } => format!("{kind:<17} agent {agent_id}"),
        ClusterEvent::FrameworkAdded(f) | ClusterEvent::FrameworkUpdated(f) => format!(
            "{kind:<17} framework {} ({}) roles {}",
            f.id,
            f.name,
            f.roles.join(",")
        ),
        ClusterEvent::FrameworkRemoved { framework_id } => {
            format!("{kind:<17} framework {framework_id}")
        }
        ClusterEvent::TaskAdded(t) | ClusterEvent::TaskUpdated(t) => {
            format!("{kind:<17} {}", task_line(t))
        }
    }
}
