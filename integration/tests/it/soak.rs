//! A fault-injection soak: 3 replicated masters, each its own host (network namespace on a
//! bridge, `integration::NetLab`), 3 agents, and waves of concurrent `corral run` clients while
//! faults chosen at random from a seed hit the cluster: kill -9 and restart of the leader, kill
//! -9 and restart of an agent, the leader's link cut for several seconds and healed.
//!
//! Every task appends its unique token to its own file in a shared 1777 directory under /run
//! (tasks have a private /tmp) and then prints it, so "ran exactly once" is a line count.
//!
//! The contract checked for each client (from the README: `corral run` exits with the task's own
//! exit code, or 125 when Corral could not run it):
//! - it exits with its task's own exit code (0, or 3 for every fourth task) and its stdout is
//!   exactly the token, and the task ran exactly once; or
//! - it exits 125 with a `corral:` message saying why, and the task never ran (an exit 125 for
//!   a task that ran — say its output could not be read — is a failure here).
//!
//! Anything else fails: another exit code, a missing or repeated token, a task run twice, a
//! task still live at the end. At most a tenth of the clients may end with 125, so a cluster
//! that runs nothing cannot pass.
//!
//! Size: `CORRAL_SOAK_CLIENTS` (default 60, in waves of `CORRAL_SOAK_WAVE`, default 6) with a
//! fault in 60-100 % of the waves (6-10 by default); `CORRAL_SOAK_SEED` replays a schedule
//! (the seed is printed first). Root only; under `CORRAL_REQUIRE_VM=1` or `CI=true` a machine
//! that cannot run it fails the test instead of skipping it.

use integration::{stderr, stdout, wait_child, Cluster, NetLab};
use std::time::{Duration, Instant};

/// How long one client may take (placement 60 s, failovers, output reads).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);
const T: Duration = Duration::from_secs(60);

/// splitmix64: small, seedable, good enough to pick faults and delays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// A duration in `[lo_ms, hi_ms)`.
    fn millis(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        Duration::from_millis(lo_ms + self.below(hi_ms - lo_ms))
    }
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// kill -9 the leading master, restart it after a pause.
    KillLeader,
    /// kill -9 an agent, restart it after a pause (its tasks keep running meanwhile).
    KillAgent,
    /// Take the leader's link down for several seconds, then up.
    CutLeader,
}

fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn required() -> bool {
    std::env::var("CORRAL_REQUIRE_VM").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Which faults hit which waves: `count` distinct waves; the first three faults are the three
/// kinds in a seeded order, the rest random.
fn schedule(rng: &mut Rng, waves: usize, count: usize) -> Vec<Option<Fault>> {
    let mut kinds = [Fault::KillLeader, Fault::KillAgent, Fault::CutLeader];
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut plan: Vec<Option<Fault>> = vec![None; waves];
    let mut order: Vec<usize> = (0..waves).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut chosen: Vec<usize> = order.into_iter().take(count.min(waves)).collect();
    chosen.sort_unstable();
    for (n, w) in chosen.into_iter().enumerate() {
        plan[w] = Some(match kinds.get(n) {
            Some(k) => *k,
            None => kinds[rng.below(3) as usize],
        });
    }
    plan
}

/// One client and what it must show.
struct Client {
    token: String,
    exit_code: i32,
    child: std::process::Child,
    started: Duration,
}

/// Why a client's result breaks the contract, if it does.
fn verdict(expected: i32, token: &str, out: &std::process::Output, runs: usize) -> Option<String> {
    let code = out.status.code();
    let printed = stdout(out);
    if code == Some(expected) {
        if printed.trim() != token {
            return Some(format!(
                "exited {expected} but its stdout is {printed:?}, not the token"
            ));
        }
        if runs != 1 {
            return Some(format!("exited {expected} but the task ran {runs} times"));
        }
        return None;
    }
    if code == Some(125) {
        if !stderr(out).contains("corral: ") {
            return Some("exited 125 without saying why".into());
        }
        if runs != 0 {
            return Some(format!(
                "exited 125 (could not run) but the task ran {runs} time(s)"
            ));
        }
        return None;
    }
    Some(format!(
        "exited {code:?}, neither its task's {expected} nor 125 (task ran {runs} time(s))"
    ))
}

fn live_tasks(c: &Cluster) -> Option<Vec<String>> {
    let out = c.client("op", &["state", "--json"], T);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let tasks = v["tasks"].as_array()?;
    Some(
        tasks
            .iter()
            .filter(|t| {
                let state = t["state"].as_str().unwrap_or("");
                !matches!(
                    state,
                    "Finished"
                        | "Failed"
                        | "Killed"
                        | "Error"
                        | "Lost"
                        | "Dropped"
                        | "Gone"
                        | "GoneByOperator"
                )
            })
            .map(|t| format!("{} {}", t["id"], t["state"]))
            .collect(),
    )
}

#[test]
fn soak_faults_every_task_runs_once_and_every_client_gets_its_result() {
    if let Err(why) = NetLab::available() {
        assert!(
            !required(),
            "the soak must run under CORRAL_REQUIRE_VM=1 / CI=true, but cannot: {why}"
        );
        eprintln!("skipping the soak: {why}");
        return;
    }
    let seed: u64 = match std::env::var("CORRAL_SOAK_SEED") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("CORRAL_SOAK_SEED={v:?} is not a number")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    };
    let clients = env_number("CORRAL_SOAK_CLIENTS", 60).max(1);
    let wave = env_number("CORRAL_SOAK_WAVE", 6).max(1);
    let waves = clients.div_ceil(wave);
    let mut rng = Rng(seed);
    let faults = (waves * 6).div_ceil(10) + rng.below((waves * 4 / 10) as u64 + 1) as usize;
    let plan = schedule(&mut rng, waves, faults);
    println!(
        "soak seed {seed} (CORRAL_SOAK_SEED={seed} replays it): {clients} clients in {waves} waves of {wave}, faults: {plan:?}"
    );

    let began = Instant::now();
    let lab = NetLab::new(3);
    let mut c = Cluster::start_replicated_on(3, Some(&lab));
    for a in ["a1", "a2", "a3"] {
        c.start_agent(a, &["--resources", "cpus:2;mem:1GiB"]);
    }
    let ran = integration::shared_dir("soak-");
    let mut timeline: Vec<String> = Vec::new();
    let log = |timeline: &mut Vec<String>, what: String| {
        let line = format!("{:7.2}s {what}", began.elapsed().as_secs_f64());
        println!("{line}");
        timeline.push(line);
    };
    log(&mut timeline, "cluster up".into());

    let mut failures: Vec<String> = Vec::new();
    let mut not_run = 0usize;
    for (w, fault) in plan.iter().enumerate() {
        let mut batch = Vec::new();
        for n in 0..wave.min(clients - w * wave) {
            let i = w * wave + n;
            let token = format!("tok-{seed:x}-{i}");
            let exit_code = if i % 4 == 3 { 3 } else { 0 };
            let pause = rng.millis(300, 4000).as_secs_f64();
            let cmd = format!(
                "echo {token} >> {dir}/{token}; sleep {pause:.2}; echo {token}; exit {exit_code}",
                dir = ran.path().display()
            );
            let name = format!("soak{i}");
            let child = c.spawn_client(
                "fw",
                &[
                    "run",
                    "--name",
                    &name,
                    "--cpus",
                    "0.1",
                    "--mem",
                    "32MiB",
                    "--placement-timeout",
                    "60",
                    "--",
                    &cmd,
                ],
            );
            batch.push(Client {
                token,
                exit_code,
                child,
                started: began.elapsed(),
            });
        }
        if let Some(fault) = fault {
            std::thread::sleep(rng.millis(0, 2500));
            inject(&mut c, &lab, &mut rng, *fault, &mut |s| {
                log(&mut timeline, s)
            });
        }
        for cl in batch {
            let out = wait_child(cl.child, CLIENT_TIMEOUT);
            let runs = std::fs::read_to_string(ran.path().join(&cl.token))
                .map(|s| s.lines().count())
                .unwrap_or(0);
            let took = began.elapsed().saturating_sub(cl.started);
            if out.status.code() == Some(125) && runs == 0 {
                not_run += 1;
            }
            match verdict(cl.exit_code, &cl.token, &out, runs) {
                None => {
                    // Why a task was not run, for the record.
                    let err = stderr(&out);
                    let why = match out.status.code() {
                        Some(125) => err.lines().rev().find(|l| l.starts_with("corral: ")),
                        _ => None,
                    };
                    log(
                        &mut timeline,
                        format!(
                            "{} exit {:?} runs {runs} ({:.1}s){}",
                            cl.token,
                            out.status.code(),
                            took.as_secs_f64(),
                            why.map(|w| format!(": {w}")).unwrap_or_default()
                        ),
                    )
                }
                Some(why) => {
                    let line = format!(
                        "{}: {why}\n--- its stdout:\n{}--- its stderr:\n{}",
                        cl.token,
                        stdout(&out),
                        stderr(&out)
                    );
                    log(&mut timeline, format!("FAILED {line}"));
                    failures.push(line);
                }
            }
        }
    }

    // No task is left live (a duplicate could still run), and then no token file grew.
    let deadline = Instant::now() + T;
    loop {
        match live_tasks(&c) {
            Some(live) if live.is_empty() => break,
            other => assert!(
                Instant::now() < deadline,
                "tasks still live a minute after the last client ended: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in 0..clients {
        let token = format!("tok-{seed:x}-{i}");
        let runs = std::fs::read_to_string(ran.path().join(&token))
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if runs > 1 {
            failures.push(format!("{token} ran {runs} times by the end"));
        }
    }
    log(
        &mut timeline,
        format!(
            "done: {clients} clients, {} faults, {not_run} not run (125), {} failures",
            plan.iter().flatten().count(),
            failures.len()
        ),
    );
    assert!(
        failures.is_empty(),
        "soak seed {seed}: {} client(s) broke the contract:\n{}\ntimeline:\n{}",
        failures.len(),
        failures.join("\n"),
        timeline.join("\n")
    );
    assert!(
        not_run * 10 <= clients,
        "soak seed {seed}: {not_run} of {clients} clients could not run their task\ntimeline:\n{}",
        timeline.join("\n")
    );
    drop(c);
    drop(lab);
}

/// Injects one fault and undoes it (restart, heal); returns once a leader serves again.
fn inject(c: &mut Cluster, lab: &NetLab, rng: &mut Rng, fault: Fault, log: &mut dyn FnMut(String)) {
    match fault {
        Fault::KillLeader => {
            let leader = c.wait_for_leader(T);
            c.master_daemon(leader).kill();
            log(format!("fault: kill -9 leader m{}", leader + 1));
            std::thread::sleep(rng.millis(300, 3000));
            c.restart_master(leader);
            log(format!("fault: m{} restarted", leader + 1));
        }
        Fault::KillAgent => {
            let i = rng.below(c.agents.len() as u64) as usize;
            c.agents[i].kill();
            log(format!("fault: kill -9 agent {}", c.agents[i].name));
            std::thread::sleep(rng.millis(300, 3000));
            c.restart_agent(i);
            log(format!("fault: agent {} restarted", c.agents[i].name));
        }
        Fault::CutLeader => {
            let leader = c.wait_for_leader(T);
            lab.set_link(leader, false);
            log(format!("fault: m{}'s link cut", leader + 1));
            std::thread::sleep(rng.millis(3000, 8000));
            lab.set_link(leader, true);
            log(format!("fault: m{}'s link healed", leader + 1));
        }
    }
    let leader = c.wait_for_leader(T);
    log(format!("leader m{}", leader + 1));
}

/// Spawns `corral run` as `fw` with its stderr in `err_file` (read while it runs).
fn spawn_run(c: &Cluster, args: &[&str], err_file: &std::path::Path) -> std::process::Child {
    std::process::Command::new(integration::corral_bin())
        .args(c.client_args("fw", args))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(err_file).expect("stderr file"))
        .env_remove("RUST_LOG")
        .spawn()
        .expect("spawn corral run")
}

fn signal(child: &std::process::Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).expect("signal");
}

/// `corral run` reads the output of a task that ended at the leader, retrying a read that
/// fails, and never exits 0 without it. Two clients are frozen (SIGSTOP) while their tasks end
/// and both agents are killed, so every read they make fails ("agent ... is not connected"):
/// the one whose agent comes back while it retries prints its task's output and exits 0; the
/// other gives up after the read deadline with 125 and a message naming the stream and why.
#[test]
fn corral_run_retries_the_output_read_and_exits_125_when_it_cannot_read_it() {
    let mut c = Cluster::start_master(&[]);
    // One task fits each agent, so the two tasks land on different agents.
    c.start_agent("a1", &["--resources", "cpus:1;mem:1GiB"]);
    c.start_agent("a2", &["--resources", "cpus:1;mem:1GiB"]);
    let shared = integration::shared_dir("out-");
    let go = shared.path().join("go");
    let cmd = |tok: &str| {
        format!(
            "echo {tok}; while [ ! -e {go} ]; do sleep 0.05; done",
            go = go.display()
        )
    };
    let (cmd_lost, cmd_back) = (cmd("tok-lost"), cmd("tok-back"));
    let (err_lost, err_back) = (
        shared.path().join("lost.err"),
        shared.path().join("back.err"),
    );
    let lost = spawn_run(
        &c,
        &["run", "--name", "lost", "--cpus", "1", "--", &cmd_lost],
        &err_lost,
    );
    let back = spawn_run(
        &c,
        &["run", "--name", "back", "--cpus", "1", "--", &cmd_back],
        &err_back,
    );
    let task = |s: &serde_json::Value, name: &str| -> serde_json::Value {
        s["tasks"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["name"] == name).cloned())
            .unwrap_or(serde_json::Value::Null)
    };
    c.wait_state("both tasks running", |s| {
        task(s, "lost")["state"] == "Running" && task(s, "back")["state"] == "Running"
    });
    use nix::sys::signal::Signal;
    signal(&lost, Signal::SIGSTOP);
    signal(&back, Signal::SIGSTOP);
    std::fs::write(&go, "").expect("let the tasks end");
    let s = c.wait_state("both tasks finished", |s| {
        task(s, "lost")["state"] == "Finished" && task(s, "back")["state"] == "Finished"
    });
    // Which agent ran which task (agent names are their hostnames).
    let agent_of = |name: &str| -> usize {
        let id = task(&s, name)["agent_id"].clone();
        let host = s["agents"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["id"] == id))
            .and_then(|a| a["hostname"].as_str())
            .expect("the task's agent")
            .to_owned();
        c.agents
            .iter()
            .position(|d| d.name == format!("agent-{host}"))
            .expect("agent daemon")
    };
    let (agent_lost, agent_back) = (agent_of("lost"), agent_of("back"));
    assert_ne!(agent_lost, agent_back, "{s:#}");
    c.agents[agent_lost].kill();
    c.agents[agent_back].kill();
    // Wait until the master knows: a read of either task's output fails for that reason.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    transport::install_crypto_provider();
    let mut opts = c.client_options("op");
    opts.connect_timeout = Duration::from_secs(1);
    for name in ["lost", "back"] {
        let id = proto::TaskId::new(task(&s, name)["id"].as_str().expect("task id"));
        let deadline = Instant::now() + T;
        loop {
            let r = rt.block_on(framework::read_log(
                &opts,
                &id,
                proto::LogStream::Stdout,
                0,
                1024,
            ));
            match r {
                Err(e) if e.to_string().contains("is not connected") => break,
                other => assert!(
                    Instant::now() < deadline,
                    "the master never saw the agent of {name} gone: {other:?}"
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    signal(&lost, Signal::SIGCONT);
    signal(&back, Signal::SIGCONT);
    // Once "back" has failed a read and is retrying, its agent returns (with the task it
    // checkpointed: its last update was not acknowledged before the read).
    let deadline = Instant::now() + T;
    while !std::fs::read_to_string(&err_back)
        .unwrap_or_default()
        .contains("retrying")
    {
        assert!(
            Instant::now() < deadline,
            "the client never retried the read: {}",
            std::fs::read_to_string(&err_back).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    c.restart_agent(agent_back);
    let out = wait_child(back, T);
    let err = std::fs::read_to_string(&err_back).unwrap_or_default();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(stdout(&out), "tok-back\n", "{err}");
    // "lost" never gets its output: 125, saying which stream could not be read and why.
    let out = wait_child(lost, T);
    let err = std::fs::read_to_string(&err_lost).unwrap_or_default();
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(!stdout(&out).contains("tok-lost"), "{err}");
    assert!(
        err.contains("its output could not be shown: cannot read the stdout of task")
            && err.contains("is not connected"),
        "{err}"
    );
}
