//! `corral mesos-gateway` with real Mesos clients from PyPI: a pymesos 0.3.15
//! `MesosSchedulerDriver` (`mesos_gateway_scheduler.py`, unchanged client code) subscribes
//! through the gateway to a real master and agent, declines with a filter, revives, launches
//! shell and argv tasks, acknowledges every update, and kills a long task; then avmesos-cli
//! 1.3.0 lists the agents, frameworks and tasks through the gateway's operator identity.
//!
//! The venv is built once per machine (`integration::mesos_clients`); if it cannot be (no
//! python3 venv module, PyPI unreachable) the test skips saying why, and fails under
//! `CORRAL_REQUIRE_VM=1` (CI).

use integration::{stderr, stdout, wait_child, Cluster, Daemon};
use std::process::{Command, Stdio};
use std::time::Duration;

fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral TCP port");
    l.local_addr().expect("local addr").port()
}

/// The python of the venv with pymesos and avmesos-cli, or `None` after printing why the test
/// skips (panics under `CORRAL_REQUIRE_VM=1`).
fn clients_or_skip(test: &str) -> Option<std::path::PathBuf> {
    match integration::mesos_clients::pymesos_python() {
        Ok(p) => Some(p),
        Err(why) => {
            assert!(
                !std::env::var("CORRAL_REQUIRE_VM").is_ok_and(|v| v == "1"),
                "{test}: CORRAL_REQUIRE_VM=1 but the Mesos clients' venv cannot be built: {why}"
            );
            println!("skipping {test}: the Mesos clients' venv cannot be built: {why}");
            None
        }
    }
}

/// An avmesos-cli configuration naming the gateway at `listen`.
fn cli_config(cluster: &Cluster, listen: &str) -> std::path::PathBuf {
    let config = cluster.dir.path().join("mesos-cli.toml");
    std::fs::write(&config, format!("[master]\naddress = \"{listen}\"\n")).expect("cli config");
    config
}

/// `mesos ARGS` (avmesos-cli), its stdout; fails the test if it fails.
fn mesos_cli(python: &std::path::Path, config: &std::path::Path, args: &[&str]) -> String {
    let mut full = vec!["-m", "avmesos.cli.mesos-cli"];
    full.extend_from_slice(args);
    let what = format!("mesos {}", args.join(" "));
    run_python(
        python,
        &full,
        &[("MESOS_CLI_CONFIG", config.as_os_str())],
        &what,
    )
}

/// Runs avmesos-cli until its output satisfies `want` (at most 30 s; panics with the last
/// output then).
fn mesos_cli_until(
    python: &std::path::Path,
    config: &std::path::Path,
    args: &[&str],
    want: impl Fn(&str) -> bool,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = mesos_cli(python, config, args);
        if want(&out) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mesos {args:?} never showed what the test waits for:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `python ARGS` with `env` (at most 60 s), prints its output under `what` and returns
/// its stdout; panics with its stderr if it fails.
fn run_python(
    python: &std::path::Path,
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
    what: &str,
) -> String {
    let child = Command::new(python)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let out = wait_child(child, Duration::from_secs(60));
    let text = stdout(&out);
    println!("--- {what} ---\n{text}{}", stderr(&out));
    assert!(out.status.success(), "{what} failed: {}", stderr(&out));
    text
}

/// Starts `corral mesos-gateway` for `cluster` as framework `fw` (operator `op` for the read
/// endpoints) on a free loopback port.
fn start_gateway(cluster: &Cluster) -> (Daemon, String) {
    let listen = format!("127.0.0.1:{}", free_tcp_port());
    let mut args: Vec<String> = vec![
        "mesos-gateway".into(),
        "--listen".into(),
        listen.clone(),
        "--master".into(),
        cluster.masters_flag(),
    ];
    args.extend(cluster.certs.flags("fw"));
    args.extend([
        "--operator-cert".into(),
        cluster.certs.cert("op").display().to_string(),
        "--operator-key".into(),
        cluster.certs.key("op").display().to_string(),
    ]);
    let gw = Daemon::spawn("mesos-gateway", &args, cluster.dir.path());
    gw.wait_for_log("Mesos gateway serving", Duration::from_secs(20));
    (gw, listen)
}

#[test]
fn pymesos_scheduler_runs_tasks_through_the_mesos_gateway() {
    let test = "pymesos_scheduler_runs_tasks_through_the_mesos_gateway";
    let Some(python) = clients_or_skip(test) else {
        return;
    };
    let mut cluster = Cluster::start_master(&[]);
    cluster.start_agent("a1", &["--resources", "cpus:2;mem:2GiB;disk:1GiB"]);
    let (gateway, listen) = start_gateway(&cluster);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/mesos_gateway_scheduler.py");
    let started = std::time::Instant::now();
    let child = Command::new(&python)
        .arg(&script)
        .arg(&listen)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the pymesos scheduler");
    let out = wait_child(child, Duration::from_secs(200));
    let (so, se) = (stdout(&out), stderr(&out));
    println!(
        "pymesos scheduler ran {:.1} s\n--- stderr ---\n{se}\n--- stdout ---\n{so}",
        started.elapsed().as_secs_f64()
    );
    let line = so
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("the scheduler printed no RESULT line:\n{se}"));
    println!("RESULT {line}");
    let r: serde_json::Value = serde_json::from_str(line).expect("RESULT is JSON");
    assert!(out.status.success(), "the scheduler failed: {r:#}");
    assert_eq!(r["ok"], true, "{r:#}");
    assert_eq!(r["version"], "1.11.0", "GET /version: {r:#}");
    assert_eq!(
        r["offers_during_filter"], 0,
        "an offer came back within 7 s of a decline with a one-hour filter: {r:#}"
    );
    assert_eq!(r["errors"], serde_json::json!([]), "{r:#}");
    let states = |t: &str| -> Vec<String> {
        r["updates"][t]
            .as_array()
            .unwrap_or_else(|| panic!("no updates of {t}: {r:#}"))
            .iter()
            .map(|s| s.as_str().unwrap_or("").to_owned())
            .collect()
    };
    for i in 0..5 {
        let t = format!("short-{i}");
        let s = states(&t);
        let running = s.iter().position(|x| x == "TASK_RUNNING");
        let finished = s.iter().position(|x| x == "TASK_FINISHED");
        assert!(
            running.is_some() && finished.is_some() && running < finished,
            "{t}: {s:?}"
        );
        let msg = r["messages"][&t].as_str().unwrap_or("");
        assert!(
            msg.contains("status 0"),
            "{t}'s exit code is visible: {msg:?}"
        );
    }
    assert!(
        states("fails-7").contains(&"TASK_FAILED".to_owned()),
        "{r:#}"
    );
    let msg = r["messages"]["fails-7"].as_str().unwrap_or("");
    assert!(msg.contains("Command exited with status 7"), "{msg:?}");
    assert!(
        states("long").ends_with(&["TASK_KILLED".to_owned()]),
        "{r:#}"
    );
    // 7 tasks, each at least STARTING/RUNNING and a terminal update, all with a uuid.
    assert!(r["acked"].as_u64().unwrap_or(0) >= 14, "{r:#}");
    // The driver's stop() tears the framework down: the master lists it as completed. pymesos
    // sends that TEARDOWN only while it still counts itself connected, and its stop() races
    // its own stream shutdown (seen once in CI: the stream closed, no TEARDOWN came, the
    // framework was only disconnected); then the operator tears it down, as one would.
    let fw = r["framework_id"].as_str().expect("framework id").to_owned();
    let completed = |s: &serde_json::Value| {
        s["completed_frameworks"]
            .as_array()
            .is_some_and(|a| a.iter().any(|f| f["id"] == fw.as_str()))
    };
    if cluster
        .poll_state(Duration::from_secs(10), completed)
        .is_err()
    {
        eprintln!("pymesos closed its stream without TEARDOWN; tearing {fw} down as the operator");
        let out = cluster.client("op", &["teardown", &fw], Duration::from_secs(60));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    cluster.wait_state("the pymesos framework completed", completed);

    // avmesos-cli reads the legacy endpoints (/slaves, /master/frameworks/, /tasks).
    let config = cli_config(&cluster, &listen);
    let cli = |args: &[&str]| mesos_cli(&python, &config, args);
    let agents = cli(&["agent", "list"]);
    let agent_id = cluster.state_json()["agents"][0]["id"]
        .as_str()
        .expect("an agent id")
        .to_owned();
    assert!(
        agents.contains(&agent_id) && agents.contains("a1") && agents.contains("True"),
        "{agents}"
    );
    // Torn down: no longer listed (Mesos lists registered frameworks only).
    let frameworks = cli(&["framework", "list", "-a"]);
    assert!(!frameworks.contains(&fw), "{frameworks}");
    let tasks = cli(&["task", "list", "-a"]);
    for (task, state) in [
        ("short-0", "TASK_FINISHED"),
        ("short-4", "TASK_FINISHED"),
        ("fails-7", "TASK_FAILED"),
        ("long", "TASK_KILLED"),
    ] {
        assert!(
            tasks
                .lines()
                .any(|l| l.split_whitespace().take(3).eq([task, state, fw.as_str()])),
            "{task} {state} {fw} in:\n{tasks}"
        );
    }
    drop(gateway);
}

#[test]
fn pymesos_scheduler_survives_a_leader_failover_of_three_masters() {
    let test = "pymesos_scheduler_survives_a_leader_failover_of_three_masters";
    let Some(python) = clients_or_skip(test) else {
        return;
    };
    let mut cluster = Cluster::start_replicated(3);
    cluster.start_agent("a1", &["--resources", "cpus:1;mem:1GiB;disk:1GiB"]);
    let (gateway, listen) = start_gateway(&cluster);
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/mesos_gateway_failover.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .arg(&listen)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the pymesos scheduler");
    // Read its stdout as it comes: READY means its task runs.
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout_pipe = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout_pipe).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) if l == "READY" => break,
            Ok(l) => seen.push(l),
            Err(e) => {
                let _ = child.kill();
                let out = wait_child(child, Duration::from_secs(10));
                panic!(
                    "the scheduler never said READY ({e}): {seen:?}\n{}",
                    stderr(&out)
                );
            }
        }
    }
    // While it runs, avmesos-cli lists the framework as active and its task as running.
    // Polled: the masters may change leader right after they start, and the framework is
    // listed once its (re-)subscription is committed at the leader of the moment.
    let config = cli_config(&cluster, &listen);
    mesos_cli_until(&python, &config, &["framework", "list"], |out| {
        out.lines()
            .any(|l| l.contains("pymesos-failover") && l.contains("True"))
    });
    mesos_cli_until(&python, &config, &["task", "list"], |out| {
        out.lines().any(|l| {
            l.split_whitespace()
                .take(2)
                .eq(["survivor", "TASK_RUNNING"])
        })
    });
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    let killed_at = std::time::Instant::now();
    cluster.master_daemon(leader).kill();
    let out = wait_child(child, Duration::from_secs(200));
    let _ = reader.join();
    let rest: Vec<String> = lines.try_iter().collect();
    let se = stderr(&out);
    println!(
        "pymesos ended {:.1} s after the leader was killed\n--- stderr ---\n{se}",
        killed_at.elapsed().as_secs_f64()
    );
    let line = rest
        .iter()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line: {rest:?}\n{se}"));
    println!("RESULT {line}");
    let r: serde_json::Value = serde_json::from_str(line).expect("RESULT is JSON");
    assert!(out.status.success(), "the scheduler failed: {r:#}");
    assert_eq!(r["ok"], true, "{r:#}");
    assert!(r["disconnects"].as_u64() >= Some(1), "{r:#}");
    assert!(r["reregistrations"].as_u64() >= Some(1), "{r:#}");
    // Reconciled after the re-subscription: the running task is reported, once per
    // reconciliation at most (the script retries one the masters' own leader changes lost).
    let reported = r["reconciled_running"].as_u64().unwrap_or(0);
    let asked = r["reconciles_sent"].as_u64().unwrap_or(0);
    assert!(
        reported >= 1 && reported <= asked,
        "the running task is reported once per reconciliation: {r:#}"
    );
    assert_eq!(r["errors"], serde_json::json!([]), "{r:#}");
    drop(gateway);
}

#[test]
fn mesos_gateway_refuses_a_non_loopback_listen_address() {
    let out = integration::corral(
        &[
            "mesos-gateway",
            "--listen",
            "0.0.0.0:5050",
            "--master",
            "127.0.0.1:1",
            "--ca",
            "/nonexistent/ca.pem",
            "--cert",
            "/nonexistent/fw.pem",
            "--key",
            "/nonexistent/fw-key.pem",
        ],
        &[],
        Duration::from_secs(20),
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("0.0.0.0:5050") && err.contains("needs TLS") && err.contains("--tls-cert"),
        "the refusal names the address, why and the way out: {err}"
    );
}

/// The HTTPS client of `mesos_gateway_serves_https_...`: Python's own TLS (ssl, http.client),
/// as Mesos clients written in Python use it. Prints one line per check.
const HTTPS_CLIENT: &str = r#"
import http.client, json, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
c.request("GET", "/version")
r = c.getresponse()
print("VERSION", r.status, json.loads(r.read())["version"])
c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
body = json.dumps({"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "root", "name": "https"}}})
c.request("POST", "/api/v1/scheduler", body, {"Content-Type": "application/json", "Accept": "application/json"})
r = c.getresponse()
n = int(r.readline())
event = json.loads(r.read(n))
print("SUBSCRIBED", r.status, event["type"], event["subscribed"]["framework_id"]["value"], r.getheader("Mesos-Stream-Id"))
try:
    untrusted = http.client.HTTPSConnection("127.0.0.1", port, context=ssl.create_default_context(), timeout=30)
    untrusted.request("GET", "/version")
    print("UNTRUSTED-ACCEPTED", untrusted.getresponse().status)
except ssl.SSLCertVerificationError as e:
    print("UNTRUSTED-REFUSED", e.reason)
try:
    plain = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    plain.request("GET", "/version")
    print("PLAIN-ANSWERED", plain.getresponse().status)
except Exception as e:
    print("PLAIN-REFUSED", type(e).__name__)
"#;

#[test]
fn mesos_gateway_serves_https_on_a_non_loopback_address_given_a_certificate() {
    let mut cluster = Cluster::start_master(&[]);
    cluster.start_agent("a1", &["--resources", "cpus:1;mem:1GiB"]);
    // The gateway's server certificate, from the cluster's CA, naming the address clients use.
    cluster
        .certs
        .issue_with_sans("operator", "gateway-https", &["127.0.0.1"]);
    let port = free_tcp_port();
    let mut args: Vec<String> = vec![
        "mesos-gateway".into(),
        "--listen".into(),
        format!("0.0.0.0:{port}"),
        "--tls-cert".into(),
        cluster.certs.cert("gateway-https").display().to_string(),
        "--tls-key".into(),
        cluster.certs.key("gateway-https").display().to_string(),
        "--master".into(),
        cluster.masters_flag(),
    ];
    args.extend(cluster.certs.flags("fw"));
    let gw = Daemon::spawn("mesos-gateway-https", &args, cluster.dir.path());
    gw.wait_for_log("Mesos gateway serving", Duration::from_secs(20));
    assert!(gw.log_text().contains("https=true"), "{}", gw.log_text());

    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("python3");
    let port = port.to_string();
    let ca = cluster.certs.ca().display().to_string();
    let text = run_python(
        std::path::Path::new(python),
        &["-c", HTTPS_CLIENT, &port, &ca],
        &[],
        "the HTTPS client",
    );
    let line = |prefix: &str| -> Vec<String> {
        let l = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} line in:\n{text}"));
        l.split(' ').map(str::to_owned).collect()
    };
    assert_eq!(line("VERSION"), ["VERSION", "200", "1.11.0"]);
    let sub = line("SUBSCRIBED");
    assert_eq!(&sub[1..3], ["200", "SUBSCRIBED"], "{text}");
    assert!(
        !sub[3].is_empty() && sub[4].len() == 36,
        "framework and stream ids: {text}"
    );
    assert!(
        text.contains("UNTRUSTED-REFUSED"),
        "a client that does not trust the CA refuses the gateway: {text}"
    );
    assert!(
        text.contains("PLAIN-REFUSED"),
        "plain HTTP gets no answer from the HTTPS listener: {text}"
    );
    drop(gw);
}
