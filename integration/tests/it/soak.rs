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
    let mut kinds = vec![Fault::KillLeader, Fault::KillAgent, Fault::CutLeader];
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
            let pause = rng.millis(200, 2500).as_secs_f64();
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
            std::thread::sleep(rng.millis(0, 1500));
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
                None => log(
                    &mut timeline,
                    format!(
                        "{} exit {:?} runs {runs} ({:.1}s)",
                        cl.token,
                        out.status.code(),
                        took.as_secs_f64()
                    ),
                ),
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
