//! The executor library against a real unix socket served by a scripted agent thread.

use super::*;
use proto::{CommandInfo, Resources};
use std::os::unix::net::UnixListener;

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "corral-executor-test-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The agent's side of one connection.
struct AgentEnd {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl AgentEnd {
    fn accept(listener: &UnixListener) -> AgentEnd {
        let (stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        AgentEnd {
            stream,
            buf: Vec::new(),
        }
    }

    fn recv(&mut self) -> ExecutorToAgent {
        loop {
            if let Some((msg, used)) =
                proto::decode::<ExecutorToAgent>(&self.buf, MAX_EXECUTOR_FRAME).expect("decode")
            {
                self.buf.drain(..used);
                return msg;
            }
            let mut chunk = [0u8; 4096];
            let n = self
                .stream
                .read(&mut chunk)
                .expect("read from the executor");
            assert!(n > 0, "the executor closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn send(&mut self, msg: &AgentToExecutor) {
        let frame = proto::codec::encode_to_vec(msg, MAX_EXECUTOR_FRAME).expect("encode");
        self.stream
            .write_all(&frame)
            .expect("write to the executor");
    }

    fn subscribed(&mut self) {
        self.send(&AgentToExecutor::Subscribed {
            agent_id: Some(AgentId::new("a1")),
            framework_id: FrameworkId::new("fw"),
            executor_id: ExecutorId::new("ex"),
        });
    }
}

fn task(id: &str) -> TaskInfo {
    TaskInfo {
        task_id: TaskId::new(id),
        name: id.into(),
        agent_id: AgentId::new("a1"),
        resources: Resources::default(),
        command: CommandInfo::shell("true"),
        container: Default::default(),
        kill_grace_ms: None,
        labels: Default::default(),
    }
}

fn launch(id: &str) -> AgentToExecutor {
    AgentToExecutor::LaunchTask {
        task: task(id),
        sandbox: format!("/sandbox/{id}"),
    }
}

/// Waits (bounded) for the executor's next event.
fn event(exec: &mut Executor) -> ExecutorEvent {
    for _ in 0..100 {
        if let Some(ev) = exec
            .next_timeout(Duration::from_millis(100))
            .expect("connected")
        {
            return ev;
        }
    }
    panic!("no event from the agent");
}

#[test]
fn subscribes_receives_tasks_and_resends_unacknowledged_updates_after_a_reconnection() {
    let dir = Scratch::new("reconnect");
    let path = dir.0.join("executor.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let agent = std::thread::spawn(move || {
        // First connection: subscribe, two tasks, one update acknowledged, one not.
        let mut a = AgentEnd::accept(&listener);
        match a.recv() {
            ExecutorToAgent::Subscribe {
                framework_id,
                executor_id,
                tasks,
                unacknowledged,
            } => {
                assert_eq!(framework_id.as_str(), "fw");
                assert_eq!(executor_id.as_str(), "ex");
                assert!(tasks.is_empty() && unacknowledged.is_empty());
            }
            other => panic!("expected Subscribe, got {other:?}"),
        }
        a.subscribed();
        a.send(&launch("t1"));
        a.send(&launch("t2"));
        let first = a.recv();
        assert!(
            matches!(&first, ExecutorToAgent::Update(u) if u.task_id.as_str() == "t1" && u.state == TaskState::Finished),
            "{first:?}"
        );
        a.send(&AgentToExecutor::Acknowledged {
            task_id: TaskId::new("t1"),
            state: TaskState::Finished,
        });
        let second = a.recv();
        assert!(
            matches!(&second, ExecutorToAgent::Update(u) if u.task_id.as_str() == "t2" && u.state == TaskState::Running),
            "{second:?}"
        );
        // The agent "restarts" before acknowledging t2's update.
        drop(a);
        let mut a = AgentEnd::accept(&listener);
        let hello = a.recv();
        match hello {
            ExecutorToAgent::Subscribe {
                tasks,
                unacknowledged,
                ..
            } => {
                assert_eq!(
                    tasks,
                    vec![TaskId::new("t2")],
                    "t1 ended and was acknowledged"
                );
                assert_eq!(unacknowledged.len(), 1);
                assert_eq!(unacknowledged[0].task_id.as_str(), "t2");
                assert_eq!(unacknowledged[0].state, TaskState::Running);
            }
            other => panic!("expected Subscribe, got {other:?}"),
        }
        a.subscribed();
        // A resent launch of a task the executor already runs is not surfaced again.
        a.send(&launch("t2"));
        a.send(&AgentToExecutor::Message {
            data: b"hi".to_vec(),
        });
        a.send(&AgentToExecutor::Shutdown { grace_ms: 250 });
        // Keep the connection open until the executor has read everything.
        let mut rest = [0u8; 16];
        let _ = a.stream.read(&mut rest);
    });

    let mut exec =
        Executor::connect(&path, FrameworkId::new("fw"), ExecutorId::new("ex")).expect("connect");
    assert_eq!(exec.agent_id().map(|a| a.as_str()), Some("a1"));
    let ids: Vec<String> = (0..2)
        .map(|_| match event(&mut exec) {
            ExecutorEvent::LaunchTask { task, sandbox } => {
                assert_eq!(sandbox, PathBuf::from(format!("/sandbox/{}", task.task_id)));
                task.task_id.to_string()
            }
            other => panic!("expected LaunchTask, got {other:?}"),
        })
        .collect();
    assert_eq!(ids, ["t1", "t2"]);
    exec.update(&TaskId::new("t1"), TaskState::Finished, None)
        .expect("update t1");
    // Reading lets the library see the acknowledgement of t1.
    assert!(exec
        .next_timeout(Duration::from_millis(200))
        .expect("connected")
        .is_none());
    exec.update(&TaskId::new("t2"), TaskState::Running, None)
        .expect("update t2");
    // The connection drops; the library reconnects and the agent sees the state it lost.
    assert_eq!(
        event(&mut exec),
        ExecutorEvent::Message {
            data: b"hi".to_vec()
        }
    );
    assert_eq!(
        event(&mut exec),
        ExecutorEvent::Shutdown {
            grace: Duration::from_millis(250)
        }
    );
    drop(exec);
    agent.join().expect("agent thread");
}

#[test]
fn a_missing_socket_is_a_clear_connect_error() {
    let dir = Scratch::new("missing");
    let path = dir.0.join("nothing.sock");
    let err = Executor::connect(&path, FrameworkId::new("fw"), ExecutorId::new("ex"))
        .err()
        .expect("no agent listens there");
    let text = err.to_string();
    assert!(
        text.contains("cannot connect to the agent") && text.contains("nothing.sock"),
        "{text}"
    );
}
