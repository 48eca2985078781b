//! Full disks: a master whose data directory fills up, an agent whose work directory does. Each
//! test mounts a small tmpfs (root only) and unmounts it afterwards.

use integration::{is_root, Certs, Daemon, Tmpfs};
use std::time::{Duration, Instant};

fn skip_unless_root(test: &str) -> bool {
    if !is_root() {
        eprintln!("skipping {test}: mounting a small tmpfs needs root");
        return true;
    }
    false
}

fn test_dir(prefix: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// Runs `corral ARGS`, killed after `timeout` (a client may retry a stopped master for long).
fn try_corral(args: &[String], timeout: Duration) -> Option<std::process::Output> {
    use std::process::{Command, Stdio};
    let mut child = Command::new(integration::corral_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_LOG")
        .spawn()
        .expect("spawn corral");
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().ok();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn args(words: &[&str], certs: &Certs, cert: &str) -> Vec<String> {
    let mut a: Vec<String> = words.iter().map(|s| s.to_string()).collect();
    a.extend(certs.flags(cert));
    a
}

/// A master whose data directory fills up stops with a clear error instead of serving on while
/// nothing can commit (clients hung on it for ever, and never failed over); restarted with
/// space again it has every change that committed before.
#[test]
fn a_master_whose_data_dir_fills_up_stops_clearly_and_restarts_with_its_registry() {
    if skip_unless_root("a_master_whose_data_dir_fills_up_stops_clearly") {
        return;
    }
    let dir = test_dir("corral-it-disk-");
    let certs = Certs::new(&dir.path().join("certs"));
    certs.issue("master", "m1");
    certs.issue("agent", "a1");
    certs.issue("operator", "op");
    let data = Tmpfs::mount(&dir.path().join("master"), "4m");
    let addr = format!("127.0.0.1:{}", integration::free_port());
    let data_dir = data.path.display().to_string();
    let master_args = args(
        &["master", "--listen", &addr, "--data-dir", &data_dir],
        &certs,
        "m1",
    );
    let mut master = Daemon::spawn("master", &master_args, dir.path());
    master.wait_for_log("master serving", Duration::from_secs(20));
    let work = dir.path().join("agent-a1");
    let work_dir = work.display().to_string();
    let agent_args = args(
        &[
            "agent",
            "--master",
            &addr,
            "--work-dir",
            &work_dir,
            "--hostname",
            "a1",
            "--resources",
            "cpus:1;mem:256MiB",
            "--isolation",
            "none",
        ],
        &certs,
        "a1",
    );
    let agent = Daemon::spawn("agent-a1", &agent_args, dir.path());
    agent.wait_for_log("registered with master", Duration::from_secs(20));
    let agent_id = std::fs::read_to_string(work.join("agent_id")).expect("the agent id");
    let op = |verb: &str| {
        let mut a = args(&[verb, "--master", &addr], &certs, "op");
        a.push(agent_id.trim().to_owned());
        try_corral(&a, Duration::from_secs(5))
    };
    // Committed before the disk fills: it must survive.
    let out = op("deactivate").expect("deactivate answers");
    assert!(
        out.status.success(),
        "deactivate: {}",
        integration::stderr(&out)
    );

    let filler = data.fill();
    // Registry changes until one cannot be written: the master must then exit by itself.
    let deadline = Instant::now() + Duration::from_secs(90);
    while master.is_running() && Instant::now() < deadline {
        let _ = op("reactivate");
        let _ = op("deactivate");
    }
    assert!(
        !master.is_running(),
        "the master still runs (serving nothing) after its log could not be written:\n{}",
        master.log_text()
    );
    let log = master.log_text();
    assert!(
        log.contains("this master stops") && log.contains("No space left on device"),
        "the master says why it stopped:\n{log}"
    );

    // Space again: the master restarts on its log (a torn tail is dropped) with the agent and
    // its committed deactivation.
    std::fs::remove_file(&filler).expect("remove the filler");
    let master2 = Daemon::spawn("master-2", &master_args, dir.path());
    master2.wait_for_log("master serving", Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = args(&["state", "--master", &addr], &certs, "op");
        let out = try_corral(&a, Duration::from_secs(10));
        let text = out.as_ref().map(integration::stdout).unwrap_or_default();
        if out.as_ref().is_some_and(|o| o.status.success()) && text.contains(agent_id.trim()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted master does not know the agent: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(agent);
    drop(master2);
    drop(master);
    drop(data);
}
