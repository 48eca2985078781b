//! A small custom executor for the integration tests, built on `framework::executor`. For each
//! task it runs the task's command as a child process (inside the executor's container, so
//! under its limits) with the task's sandbox as working directory and its stdout/stderr files
//! there, reports TASK_RUNNING, then TASK_FINISHED or TASK_FAILED with the exit code (or
//! TASK_KILLED after a kill). It echoes framework messages back prefixed with "echo: ", and on
//! Shutdown kills its tasks and exits.

use framework::executor::{Executor, ExecutorEvent};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use proto::{ExecutorUpdate, TaskId, TaskInfo, TaskState};
use std::collections::BTreeMap;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEFAULT_GRACE: Duration = Duration::from_secs(3);

struct Running {
    child: Child,
    /// Set once a kill was asked: when SIGKILL is due.
    kill_at: Option<Instant>,
}

/// `test-executor hoard N`: (run as a task inside an executor's container) opens N
/// connections to the executor's socket, keeps them open, says so on stdout and sleeps: a
/// misbehaving process the agent must not keep a task and a descriptor for per connection.
fn hoard(n: usize) -> ! {
    let socket = std::env::var_os("CORRAL_EXECUTOR_SOCKET").unwrap_or_default();
    let mut held = Vec::new();
    for _ in 0..n {
        match std::os::unix::net::UnixStream::connect(&socket) {
            Ok(s) => held.push(s),
            Err(e) => eprintln!("test-executor hoard: connect: {e}"),
        }
    }
    println!("hoarded {}", held.len());
    std::thread::sleep(Duration::from_secs(600));
    std::process::exit(0)
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("hoard") {
        hoard(argv.get(2).and_then(|n| n.parse().ok()).unwrap_or(100));
    }
    let mut exec = match Executor::connect_from_env() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("test-executor: {e}");
            std::process::exit(2);
        }
    };
    eprintln!(
        "test-executor: subscribed as {} of {}",
        exec.executor_id(),
        exec.framework_id()
    );
    let mut tasks: BTreeMap<TaskId, Running> = BTreeMap::new();
    loop {
        let event = match exec.next_timeout(Duration::from_millis(100)) {
            Ok(ev) => ev,
            Err(e) => {
                eprintln!("test-executor: {e}; killing my tasks and exiting");
                kill_all(&mut tasks, Duration::ZERO);
                std::process::exit(1);
            }
        };
        match event {
            Some(ExecutorEvent::LaunchTask { task, sandbox }) => {
                launch(&mut exec, &mut tasks, *task, &sandbox)
            }
            Some(ExecutorEvent::KillTask { task_id, grace }) => match tasks.get_mut(&task_id) {
                Some(r) => {
                    let _ = killpg(Pid::from_raw(r.child.id() as i32), Signal::SIGTERM);
                    r.kill_at = Some(Instant::now() + grace.unwrap_or(DEFAULT_GRACE));
                }
                None => eprintln!("test-executor: kill of unknown task {task_id}"),
            },
            // "flap TASK N": N updates of TASK alternating STARTING and RUNNING (a misbehaving
            // executor), then the answer "flapped".
            Some(ExecutorEvent::Message { data }) if data.starts_with(b"flap ") => {
                let text = String::from_utf8_lossy(&data).into_owned();
                let mut words = text.split_whitespace().skip(1);
                let id = TaskId::new(words.next().unwrap_or_default());
                let n: usize = words.next().and_then(|n| n.parse().ok()).unwrap_or(10);
                for i in 0..n {
                    let state = if i % 2 == 0 {
                        TaskState::Starting
                    } else {
                        TaskState::Running
                    };
                    let _ = exec.update(&id, state, None);
                }
                let _ = exec.send_message(b"flapped".to_vec());
            }
            Some(ExecutorEvent::Message { data }) => {
                let mut reply = b"echo: ".to_vec();
                reply.extend_from_slice(&data);
                if let Err(e) = exec.send_message(reply) {
                    eprintln!("test-executor: cannot answer a message: {e}");
                }
            }
            Some(ExecutorEvent::Shutdown { grace }) => {
                eprintln!("test-executor: shutting down");
                kill_all(&mut tasks, grace);
                reap(&mut exec, &mut tasks);
                return;
            }
            None => {}
        }
        reap(&mut exec, &mut tasks);
    }
}

fn launch(
    exec: &mut Executor,
    tasks: &mut BTreeMap<TaskId, Running>,
    task: TaskInfo,
    sandbox: &Path,
) {
    let id = task.task_id.clone();
    let c = &task.command;
    let mut cmd = if c.shell {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(&c.value);
        cmd
    } else {
        let argv = if c.arguments.is_empty() {
            vec![c.value.clone()]
        } else {
            c.arguments.clone()
        };
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        cmd
    };
    let open = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(sandbox.join(name))
    };
    let (stdout, stderr) = match (open("stdout"), open("stderr")) {
        (Ok(o), Ok(e)) => (Stdio::from(o), Stdio::from(e)),
        (Err(e), _) | (_, Err(e)) => {
            fail(
                exec,
                &id,
                format!(
                    "cannot open the task's log files in {}: {e}",
                    sandbox.display()
                ),
            );
            return;
        }
    };
    cmd.envs(c.environment.iter())
        .env("CORRAL_TASK_ID", id.as_str())
        .env("CORRAL_SANDBOX", sandbox)
        .current_dir(sandbox)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    match cmd.spawn() {
        Ok(child) => {
            let pid = child.id();
            tasks.insert(
                id.clone(),
                Running {
                    child,
                    kill_at: None,
                },
            );
            let _ = exec.update(
                &id,
                TaskState::Running,
                Some(format!("running as pid {pid}")),
            );
        }
        Err(e) => fail(exec, &id, format!("cannot start the task: {e}")),
    }
}

fn fail(exec: &mut Executor, id: &TaskId, message: String) {
    let _ = exec.update(id, TaskState::Failed, Some(message));
}

fn kill_all(tasks: &mut BTreeMap<TaskId, Running>, grace: Duration) {
    for r in tasks.values_mut() {
        let _ = killpg(Pid::from_raw(r.child.id() as i32), Signal::SIGTERM);
        r.kill_at = Some(Instant::now() + grace);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline
        && tasks
            .values_mut()
            .any(|r| matches!(r.child.try_wait(), Ok(None)))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    for r in tasks.values_mut() {
        let _ = killpg(Pid::from_raw(r.child.id() as i32), Signal::SIGKILL);
    }
}

/// Reports every task that ended and sends SIGKILL to those whose grace period is over.
fn reap(exec: &mut Executor, tasks: &mut BTreeMap<TaskId, Running>) {
    let mut ended = Vec::new();
    for (id, r) in tasks.iter_mut() {
        match r.child.try_wait() {
            Ok(Some(status)) => ended.push((id.clone(), status, r.kill_at.is_some())),
            Ok(None) => {
                if r.kill_at.is_some_and(|t| Instant::now() >= t) {
                    let _ = killpg(Pid::from_raw(r.child.id() as i32), Signal::SIGKILL);
                }
            }
            Err(e) => eprintln!("test-executor: cannot wait for {id}: {e}"),
        }
    }
    for (id, status, killed) in ended {
        tasks.remove(&id);
        let (state, message) = if killed {
            (TaskState::Killed, "killed on request".to_owned())
        } else if status.code() == Some(0) {
            (TaskState::Finished, "exited with code 0".to_owned())
        } else if let Some(code) = status.code() {
            (TaskState::Failed, format!("exited with code {code}"))
        } else {
            let sig = status.signal().unwrap_or(0);
            (TaskState::Failed, format!("killed by signal {sig}"))
        };
        let _ = exec.send_update(ExecutorUpdate {
            task_id: id,
            state,
            reason: None,
            message: Some(message),
            exit_code: status.code(),
            signal: status.signal(),
        });
    }
}
