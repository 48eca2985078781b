//! Join tokens and certificate renewal (issue 15): a node with no certificate and no CA key gets
//! one from the masters with a token, agents renew theirs while tasks run, and every bad token
//! is refused with a clear error.

use integration::{corral, shared_dir, stderr, stdout, wait_child, Cluster, Daemon};
use proto::{ClientFrame, ErrorCode, OperatorCall, Role, ServerFrame};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

const T: Duration = Duration::from_secs(60);

/// `corral certs token` on the CA host: the token (last line of stdout).
fn mint(ca_dir: &Path, args: &[&str]) -> String {
    let d = ca_dir.to_str().expect("utf-8");
    let mut full = vec!["certs", "token", "--dir", d];
    full.extend_from_slice(args);
    let out = corral(&full, &[], T);
    assert!(out.status.success(), "certs token: {}", stderr(&out));
    let text = stdout(&out);
    let token = text.lines().last().expect("a token line").trim().to_owned();
    assert!(token.starts_with("corral-join1:"), "{text}");
    token
}

/// The token's id (its sixth field).
fn token_id(token: &str) -> String {
    token.split(':').nth(5).expect("an id field").to_owned()
}

/// `corral certs join TOKEN` into `dir` as `name`.
fn join(c: &Cluster, token: &str, dir: &Path, name: &str) -> std::process::Output {
    corral(
        &[
            "certs",
            "join",
            token,
            "--master",
            &c.masters_flag(),
            "--dir",
            dir.to_str().expect("utf-8"),
            "--name",
            name,
        ],
        &[],
        T,
    )
}

/// An agent started with `--join TOKEN` and no certificate files, registered.
fn start_joining_agent(c: &Cluster, name: &str, token: &str) -> (Daemon, PathBuf) {
    let work = c.dir.path().join(format!("agent-{name}"));
    let args: Vec<String> = vec![
        "agent".into(),
        "--master".into(),
        c.masters_flag(),
        "--work-dir".into(),
        work.display().to_string(),
        "--hostname".into(),
        name.into(),
        "--join".into(),
        token.into(),
        "--cleanup-on-exit".into(),
        "--cgroup-parent".into(),
        format!(
            "{}-{name}",
            c.dir
                .path()
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("corral-it")
        ),
        "--resources".into(),
        "cpus:2;mem:1GiB".into(),
    ];
    let agent = Daemon::spawn(&format!("agent-{name}"), &args, c.dir.path());
    agent.wait_for_log("registered with master", Duration::from_secs(30));
    (agent, work.join("tls"))
}

fn validity(cert: &Path) -> (i64, i64) {
    certs::cert_validity(&std::fs::read_to_string(cert).expect("read the certificate"))
        .expect("a certificate")
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn poll(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_fresh_agent_joins_runs_a_task_and_renews_its_certificate_while_the_task_runs() {
    let mut c = Cluster::start_master_with_ca_key(&["--join-cert-ttl", "1m"]);
    let token = mint(&c.certs.dir, &["--role", "agent", "--ttl", "10m"]);
    let (mut agent, tls) = start_joining_agent(&c, "joiner", &token);

    // The agent wrote its own key and a certificate from the master; it never had the CA key.
    let cert = tls.join("agent.pem");
    assert!(tls.join("agent-key.pem").exists() && tls.join("ca.pem").exists());
    assert!(!tls.join("ca-key.pem").exists());
    let mode = std::fs::metadata(tls.join("agent-key.pem"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("key file");
    assert_eq!(mode, 0o600);
    let (_, first_expiry) = validity(&cert);
    assert!(
        first_expiry <= unix_now() + 61,
        "the certificate lives a minute"
    );
    let der = certs::first_pem_der_of(&std::fs::read_to_string(&cert).unwrap()).unwrap();
    let id = certs::identity_from_cert_der(&der).expect("identity");
    assert_eq!((id.role, id.name.as_str()), (Role::Agent, "joiner"));

    // A task that runs until the test lets it end.
    let flags = shared_dir("corral-join-");
    let go = flags.path().join("go");
    let cmd = format!(
        "while [ ! -e {} ]; do sleep 0.2; done; echo finished",
        go.display()
    );
    let run = c.spawn_client("fw", &["run", "--", &cmd]);
    agent.wait_for_log("state=TASK_RUNNING", Duration::from_secs(30));

    // Renewal at two thirds of the minute, without a restart: a new certificate and key.
    agent.wait_for_log("renewed this node's certificate", Duration::from_secs(60));
    let (_, renewed_expiry) = validity(&cert);
    assert!(
        renewed_expiry > first_expiry,
        "the certificate was replaced"
    );
    assert!(agent.is_running(), "the agent did not restart to renew");

    // Once the first certificate has expired, a master restart makes the agent connect again:
    // it can only do so with the renewed certificate.
    poll(
        "the first certificate's expiry",
        Duration::from_secs(40),
        || unix_now() > first_expiry + 1,
    );
    let registrations = agent.log_text().matches("registered with master").count();
    c.master_daemon(0).kill();
    c.restart_master(0);
    poll(
        "the agent's registration with the restarted master",
        Duration::from_secs(30),
        || agent.log_text().matches("registered with master").count() > registrations,
    );
    assert!(
        !agent.log_text().contains("refused our certificate"),
        "{}",
        agent.log_text()
    );

    // The task kept running through all of it and ends normally now.
    std::fs::write(&go, b"").expect("let the task end");
    let out = wait_child(run, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(&out));
    assert!(stdout(&out).contains("finished"), "{}", stdout(&out));
    assert_eq!(
        stderr(&out).matches("TASK_RUNNING").count(),
        1,
        "{}",
        stderr(&out)
    );
    agent.stop();
}

#[test]
fn frameworks_join_too_and_used_expired_revoked_or_foreign_tokens_are_refused() {
    let mut c = Cluster::start_master_with_ca_key(&[]);
    c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    let home = tempfile::tempdir_in(integration::scratch_dir()).expect("tempdir");

    // A framework joins and runs a task with the certificate it got.
    let token = mint(&c.certs.dir, &["--role", "framework", "--ttl", "10m"]);
    let out = join(&c, &token, &home.path().join("fw"), "joined-fw");
    assert!(out.status.success(), "join: {}", stderr(&out));
    let fw_dir = home.path().join("fw");
    let fw = [
        "--ca".to_owned(),
        fw_dir.join("ca.pem").display().to_string(),
        "--cert".to_owned(),
        fw_dir.join("joined-fw.pem").display().to_string(),
        "--key".to_owned(),
        fw_dir.join("joined-fw-key.pem").display().to_string(),
    ];
    let master = c.masters_flag();
    let mut args: Vec<&str> = vec!["run", "--master", &master];
    args.extend(fw.iter().map(String::as_str));
    args.extend(["--", "echo", "hello"]);
    let out = corral(&args, &[], T);
    assert_eq!(out.status.code(), Some(0), "run: {}", stderr(&out));
    assert!(stdout(&out).contains("hello"));

    // It renews on demand: a new key, the same identity.
    let old_key = std::fs::read(fw_dir.join("joined-fw-key.pem")).unwrap();
    let mut renew: Vec<&str> = vec!["certs", "renew", "--master", &master];
    renew.extend(fw.iter().map(String::as_str));
    let out = corral(&renew, &[], T);
    assert!(out.status.success(), "renew: {}", stderr(&out));
    assert_ne!(
        std::fs::read(fw_dir.join("joined-fw-key.pem")).unwrap(),
        old_key
    );

    // Used: the token allowed one join.
    let out = join(&c, &token, &home.path().join("again"), "second");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already used"), "{}", stderr(&out));
    assert!(!home.path().join("again").join("second-key.pem").exists());

    // Revoked.
    let revoked = mint(&c.certs.dir, &["--role", "agent", "--uses", "3"]);
    let id = token_id(&revoked);
    let mut revoke: Vec<String> = vec!["certs".into(), "revoke-token".into(), id];
    revoke.extend(["--master".to_owned(), master.clone()]);
    revoke.extend(c.certs.flags("op"));
    let out = corral(
        &revoke.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
        T,
    );
    assert!(out.status.success(), "revoke: {}", stderr(&out));
    let out = join(&c, &revoked, &home.path().join("rev"), "rev");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("was revoked"), "{}", stderr(&out));

    // Expired: wait (polling the clock) until its expiry has passed.
    let expiring = mint(&c.certs.dir, &["--role", "agent", "--ttl", "1s"]);
    let expires: i64 = expiring.split(':').nth(2).unwrap().parse().unwrap();
    poll("the token's expiry", Duration::from_secs(5), || {
        unix_now() > expires
    });
    let out = join(&c, &expiring, &home.path().join("exp"), "exp");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));

    // Altered (another role): the MAC no longer matches.
    let altered = mint(&c.certs.dir, &["--role", "agent"]).replace(":agent:", ":operator:");
    let out = join(&c, &altered, &home.path().join("alt"), "alt");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not made with this cluster's CA key"),
        "{}",
        stderr(&out)
    );

    // Another cluster's CA: the joiner does not trust this master (the pinned hash differs).
    let other = integration::Certs::new(&home.path().join("other-ca"));
    let foreign = mint(&other.dir, &["--role", "agent"]);
    let out = join(&c, &foreign, &home.path().join("foreign"), "foreign");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("did not present the CA certificate"),
        "{}",
        stderr(&out)
    );
    assert!(!home.path().join("foreign").join("foreign.pem").exists());

    // A connection without a certificate may only join.
    anonymous_clients_may_only_join(&c);
}

fn anonymous_clients_may_only_join(c: &Cluster) {
    transport::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let ep = transport::testing::client_endpoint_without_certificate(&c.certs.ca())
            .expect("endpoint");
        let conn = transport::connect(&ep, c.master_addr, Role::Master, None)
            .await
            .expect("a master accepting joins completes the handshake");
        let (mut tx, mut rx) =
            transport::open_framed::<ClientFrame, ServerFrame>(&conn, proto::MAX_FRAME_LEN)
                .await
                .expect("stream");
        tx.send(&ClientFrame::Operator(OperatorCall::GetState))
            .await
            .expect("send");
        match rx.recv().await {
            Ok(Some(ServerFrame::Error(e))) => {
                assert_eq!(e.code, ErrorCode::Forbidden);
                assert!(e.message.contains("only join"), "{}", e.message);
            }
            other => panic!("a client without a certificate was answered {other:?}"),
        }
    });
}

#[test]
fn a_master_without_the_ca_key_refuses_joins_saying_why() {
    let c = Cluster::start_master(&[]);
    let token = mint(&c.certs.dir, &["--role", "agent"]);
    let home = tempfile::tempdir_in(integration::scratch_dir()).expect("tempdir");
    let out = join(&c, &token, home.path(), "n");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--ca-key"), "{}", stderr(&out));

    // An agent refuses a token for another role before asking any master.
    let fw_token = mint(&c.certs.dir, &["--role", "framework"]);
    let work = home.path().join("agent");
    let master = c.masters_flag();
    let args = [
        "agent",
        "--master",
        &master,
        "--work-dir",
        work.to_str().expect("utf-8"),
        "--join",
        &fw_token,
    ];
    let out = corral(&args, &[], T);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the token is for role framework, not agent"),
        "{}",
        stderr(&out)
    );
    assert!(!work.join("tls").exists());
}

#[test]
fn a_used_token_stays_used_after_the_leader_changes() {
    let mut c = Cluster::start_replicated_with_ca_key(3);
    let token = mint(&c.certs.dir, &["--role", "operator"]);
    let home = tempfile::tempdir_in(integration::scratch_dir()).expect("tempdir");
    let out = join(&c, &token, &home.path().join("first"), "ops-1");
    assert!(out.status.success(), "join: {}", stderr(&out));

    // The use is in the replicated registry: the next leader refuses the token too.
    let leader = c.wait_for_leader(T);
    c.master_daemon(leader).kill();
    poll("a new leader", T, || {
        let out = c.client("op", &["state", "--json"], Duration::from_secs(10));
        let text = stdout(&out);
        let old = format!("\"leader\": \"{}\"", c.master_addrs[leader]);
        out.status.success() && text.contains("\"leader\": \"") && !text.contains(&old)
    });
    let out = join(&c, &token, &home.path().join("second"), "ops-2");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already used"), "{}", stderr(&out));

    // The certificate it got works: an operator call with it.
    let dir = home.path().join("first");
    let files = [
        ("--ca", dir.join("ca.pem")),
        ("--cert", dir.join("ops-1.pem")),
        ("--key", dir.join("ops-1-key.pem")),
    ];
    let master = c.masters_flag();
    let mut args: Vec<String> = vec!["state".into(), "--master".into(), master];
    for (flag, path) in files {
        args.push(flag.into());
        args.push(path.display().to_string());
    }
    let out = corral(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[], T);
    assert!(out.status.success(), "state: {}", stderr(&out));
}
