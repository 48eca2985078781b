//! The gateway against a real master and agent (in this process, over QUIC + mTLS with fresh
//! certificates; tasks as plain processes), spoken to over plain HTTP/1.1 the way Mesos clients
//! do: a chunked RecordIO stream for SUBSCRIBE, one request per call.

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(30);

struct Cluster {
    gateway: SocketAddr,
    master: SocketAddr,
    master_task: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    dir: tempfile::TempDir,
    stops: Vec<oneshot::Sender<()>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in self.stops.drain(..) {
            let _ = s.send(());
        }
        if let Some((stop, _)) = self.master_task.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts the master (again) on `listen` with its state in `dir/master`.
fn spawn_master(
    dir: &Path,
    listen: SocketAddr,
) -> (
    SocketAddr,
    (oneshot::Sender<()>, tokio::task::JoinHandle<()>),
) {
    let certs_dir = dir.join("certs");
    let server = master::MasterServer::bind(master::Config {
        listen,
        data_dir: dir.join("master"),
        identity: identity(&certs_dir, proto::Role::Master, "m1"),
        core: master_core::MasterConfig {
            id_prefix: format!("gw{}", uuid_suffix()),
            ..Default::default()
        },
        max_frame_len: proto::MAX_FRAME_LEN,
        raft: master::RaftSetup::default(),
        metrics_listen: None,
        join: None,
    })
    .expect("bind the master");
    let addr = server.local_addr();
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = server
            .run(async {
                let _ = rx.await;
            })
            .await;
    });
    (addr, (stop, task))
}

/// Four hex digits, unique enough per master start in one test.
fn uuid_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{:x}{:x}",
        std::process::id() & 0xff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Cluster {
    /// Stops the master and starts a new one on the same address and state (a failover).
    async fn restart_master(&mut self) {
        if let Some((stop, task)) = self.master_task.take() {
            let _ = stop.send(());
            let _ = tokio::time::timeout(WAIT, task).await;
        }
        let (addr, task) = spawn_master(self.dir.path(), self.master);
        assert_eq!(addr, self.master);
        self.master_task = Some(task);
    }
}

fn identity(dir: &Path, role: proto::Role, name: &str) -> Arc<transport::Identity> {
    let req = certs::IssueRequest {
        role,
        name: name.to_owned(),
        sans: vec![],
        days: 1,
    };
    let p = certs::issue(dir, &req, true).expect("issue a certificate");
    Arc::new(
        transport::Identity::load(&transport::TlsFiles {
            ca: dir.join("ca.pem"),
            cert: p.cert,
            key: p.key,
        })
        .expect("load the identity"),
    )
}

/// A master, an agent with `cpus:2;mem:1GiB` and a gateway whose heartbeat is 300 ms (with an
/// operator identity for the legacy endpoints when `operator`).
async fn start(operator: bool) -> Cluster {
    transport::install_crypto_provider();
    let dir = tempfile::Builder::new()
        .prefix("gateway-api-")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    let certs_dir = dir.path().join("certs");
    std::fs::create_dir_all(&certs_dir).unwrap();
    certs::init_ca(&certs_dir, false).expect("CA");
    let (master_addr, master_task) = spawn_master(dir.path(), "127.0.0.1:0".parse().unwrap());
    let work = dir.path().join("agent");
    std::fs::create_dir_all(&work).unwrap();
    let config = agent::Config {
        masters: vec![master_addr.to_string()],
        work_dir: work,
        identity: identity(&certs_dir, proto::Role::Agent, "a1"),
        resources: Some("cpus:2;mem:1GiB;disk:1GiB;ports:[31000-31009]".into()),
        reserved: None,
        attributes: [("rack".to_owned(), "r1".to_owned())].into(),
        isolation: agent::IsolationMode::None,
        cgroup_parent: None,
        cgroup_driver: agent::CgroupDriver::Cgroupfs,
        default_user: None,
        allowed_users: vec![],
        allow_root: true,
        default_pids_limit: 256,
        hostname: "node-a1".into(),
        init_program: "/bin/false".into(),
        init_args: vec![],
        retry: agent::RetryPolicy {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(30),
        },
        kill_grace: Duration::from_secs(2),
        cleanup_on_exit: true,
        gc: Default::default(),
        metrics_listen: None,
    };
    let (stop_agent, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = agent::run(config, async {
            let _ = rx.await;
        })
        .await;
    });
    let opts = framework::ClientOptions::new(
        vec![master_addr.to_string()],
        identity(&certs_dir, proto::Role::Framework, "gw-fw"),
    );
    let operator = operator.then(|| {
        framework::ClientOptions::new(
            vec![master_addr.to_string()],
            identity(&certs_dir, proto::Role::Operator, "gw-op"),
        )
    });
    let gw = mesos_gateway::Gateway::bind(mesos_gateway::GatewayConfig {
        listen: "127.0.0.1:0".into(),
        tls: None,
        framework: opts,
        heartbeat: Duration::from_millis(300),
        operator,
    })
    .await
    .expect("bind the gateway");
    let gateway = gw.local_addr();
    let (stop_gw, rx) = oneshot::channel::<()>();
    tokio::spawn(gw.run(async {
        let _ = rx.await;
    }));
    Cluster {
        gateway,
        master: master_addr,
        master_task: Some(master_task),
        dir,
        stops: vec![stop_gw, stop_agent],
    }
}

/// One response: status, headers (lower-case names), body.
struct Reply {
    status: u16,
    headers: Headers,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Header names (lower case) and values.
type Headers = Vec<(String, String)>;

/// The status, the headers and where the body starts, once the head is complete.
fn split_head(buf: &[u8]) -> Option<(u16, Headers, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some((status, headers, end + 4))
}

fn request(method: &str, path: &str, body: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    for (k, v) in extra {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    r.into_bytes()
}

/// A request on its own connection, read to the end.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    extra: &[(&str, &str)],
) -> Reply {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connect to the gateway");
    s.write_all(&request(method, path, body, extra))
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("a reply in time")
        .unwrap();
    let (status, headers, at) = split_head(&buf).expect("an HTTP response");
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&buf[at..]).into_owned(),
    }
}

async fn call(c: &Cluster, stream_id: &str, body: Value) -> Reply {
    http(
        c.gateway,
        "POST",
        "/api/v1/scheduler",
        &body.to_string(),
        &[
            ("Content-Type", "application/json"),
            ("Mesos-Stream-Id", stream_id),
        ],
    )
    .await
}

/// A SUBSCRIBE stream: de-chunks the body and splits RecordIO records.
struct Events {
    sock: TcpStream,
    raw: Vec<u8>,
    data: Vec<u8>,
    stream_id: String,
    framework_id: String,
    ended: bool,
    /// Every status seen, by (task, state).
    seen: Vec<(String, String, Value)>,
}

impl Events {
    async fn subscribe(c: &Cluster, framework_info: Value, framework_id: Option<&str>) -> Events {
        let mut body =
            json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": framework_info}});
        if let Some(id) = framework_id {
            body["framework_id"] = json!({"value": id});
        }
        let mut sock = TcpStream::connect(c.gateway).await.unwrap();
        let req = request(
            "POST",
            "/api/v1/scheduler",
            &body.to_string(),
            &[
                ("Content-Type", "application/json"),
                ("Accept", "application/json"),
            ],
        );
        sock.write_all(&req).await.unwrap();
        let mut raw = Vec::new();
        let deadline = Instant::now() + WAIT;
        let (status, headers, at) = loop {
            if let Some(h) = split_head(&raw) {
                break h;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline.into(), sock.read(&mut chunk))
                .await
                .expect("SUBSCRIBE answered in time")
                .unwrap();
            assert!(
                n > 0,
                "the gateway closed before answering: {:?}",
                String::from_utf8_lossy(&raw)
            );
            raw.extend_from_slice(&chunk[..n]);
        };
        assert_eq!(status, 200, "SUBSCRIBE: {}", String::from_utf8_lossy(&raw));
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(get("transfer-encoding").as_deref(), Some("chunked"));
        assert_eq!(get("content-type").as_deref(), Some("application/json"));
        let stream_id = get("mesos-stream-id").expect("a Mesos-Stream-Id header");
        let mut ev = Events {
            sock,
            raw: raw[at..].to_vec(),
            data: Vec::new(),
            stream_id,
            framework_id: String::new(),
            ended: false,
            seen: Vec::new(),
        };
        let first = ev.next().await.expect("SUBSCRIBED");
        assert_eq!(first["type"], "SUBSCRIBED", "{first}");
        assert!(
            first["subscribed"]["heartbeat_interval_seconds"]
                .as_f64()
                .unwrap()
                > 0.0
        );
        assert_eq!(first["subscribed"]["master_info"]["version"], "1.11.0");
        ev.framework_id = first["subscribed"]["framework_id"]["value"]
            .as_str()
            .expect("framework_id.value")
            .to_owned();
        ev
    }

    /// The next event, or `None` once the stream ended.
    async fn next(&mut self) -> Option<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(nl) = self.data.iter().position(|&b| b == b'\n') {
                let len: usize = std::str::from_utf8(&self.data[..nl])
                    .unwrap()
                    .parse()
                    .expect("a record length");
                if self.data.len() >= nl + 1 + len {
                    let rec: Vec<u8> = self.data.drain(..nl + 1 + len).skip(nl + 1).collect();
                    assert!(rec.is_ascii(), "records are ASCII");
                    return Some(serde_json::from_slice(&rec).expect("a JSON record"));
                }
            }
            // De-chunk what arrived: SIZE\r\nDATA\r\n.
            if let Some(crlf) = self.raw.windows(2).position(|w| w == b"\r\n") {
                let size = usize::from_str_radix(
                    std::str::from_utf8(&self.raw[..crlf]).unwrap().trim(),
                    16,
                )
                .expect("a chunk size");
                if size == 0 {
                    self.ended = true;
                    return None;
                }
                if self.raw.len() >= crlf + 2 + size + 2 {
                    let chunk: Vec<u8> = self.raw.drain(..crlf + 2 + size + 2).collect();
                    self.data
                        .extend_from_slice(&chunk[crlf + 2..crlf + 2 + size]);
                    continue;
                }
            }
            if self.ended {
                return None;
            }
            let mut buf = [0u8; 8192];
            let n = tokio::time::timeout_at(deadline.into(), self.sock.read(&mut buf))
                .await
                .expect("an event within 30 s")
                .unwrap_or(0);
            if n == 0 {
                self.ended = true;
                return None;
            }
            self.raw.extend_from_slice(&buf[..n]);
        }
    }

    /// The next event of type `kind`, skipping others (heartbeats, offers...).
    async fn next_of(&mut self, kind: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let e = self
                .next()
                .await
                .unwrap_or_else(|| panic!("the stream ended before {kind}"));
            if e["type"] == kind {
                return e;
            }
            if e["type"] != "HEARTBEAT" {
                eprintln!("event: {e}");
            }
            assert!(Instant::now() < deadline, "no {kind} within {WAIT:?}");
        }
    }

    /// The next UPDATE of `task` in `state`, acknowledging every update with a uuid on the way.
    async fn update(&mut self, c: &Cluster, task: &str, state: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some((_, _, st)) = self.seen.iter().find(|(t, s, _)| t == task && s == state) {
                return st.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {state} of {task} within {WAIT:?}"
            );
            let e = self.next_of("UPDATE").await;
            let st = e["update"]["status"].clone();
            eprintln!("update: {st}");
            if st.get("uuid").is_some() {
                let ack = json!({"framework_id": {"value": self.framework_id}, "type": "ACKNOWLEDGE",
                    "acknowledge": {"agent_id": st["agent_id"], "task_id": st["task_id"], "uuid": st["uuid"]}});
                let r = call(c, &self.stream_id, ack).await;
                assert_eq!(r.status, 202, "ACKNOWLEDGE: {}", r.body);
            }
            let t = st["task_id"]["value"].as_str().unwrap_or("").to_owned();
            let s = st["state"].as_str().unwrap_or("").to_owned();
            self.seen.push((t, s, st));
        }
    }
}

fn info(name: &str) -> Value {
    json!({"user": "root", "name": name, "failover_timeout": 100,
           "capabilities": [{"type": "GPU_RESOURCES"}], "hostname": "ignored", "webui_url": ""})
}

fn task(id: &str, agent: &Value, cpus: f64, command: Value) -> Value {
    json!({"name": id, "task_id": {"value": id}, "agent_id": agent, "slave_id": agent,
           "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}, "role": "*"},
                         {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}}],
           "command": command})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduler_launches_acknowledges_kills_reconciles_and_tears_down() {
    let c = start(true).await;
    let v = http(c.gateway, "GET", "/version", "", &[]).await;
    assert_eq!(v.status, 200);
    let version: Value = serde_json::from_str(&v.body).unwrap();
    assert_eq!(version["version"], "1.11.0");

    let mut ev = Events::subscribe(&c, info("e2e"), None).await;
    let offers = ev.next_of("OFFERS").await;
    ev.next_of("HEARTBEAT").await;
    let offer = &offers["offers"]["offers"][0];
    assert_eq!(offer["hostname"], "node-a1");
    assert_eq!(offer["framework_id"]["value"], ev.framework_id.as_str());
    assert_eq!(offer["attributes"][0]["text"]["value"], "r1");
    let res = offer["resources"].as_array().unwrap();
    let cpus = res.iter().find(|r| r["name"] == "cpus").expect("cpus");
    assert_eq!(cpus["scalar"]["value"], 2.0);
    assert_eq!(cpus["role"], "*");
    let ports = res.iter().find(|r| r["name"] == "ports").expect("ports");
    assert_eq!(
        ports["ranges"]["range"][0],
        json!({"begin": 31000, "end": 31009})
    );
    let agent = offer["agent_id"].clone();

    let accept = json!({"framework_id": {"value": ev.framework_id}, "type": "ACCEPT", "accept": {
        "offer_ids": [offer["id"]],
        "operations": [{"type": "LAUNCH", "launch": {"task_infos": [
            task("exit3", &agent, 0.1, json!({"value": "echo $GREETING; exit 3",
                "environment": {"variables": [{"name": "GREETING", "value": "hi"}]}})),
            task("argv", &agent, 0.1, json!({"shell": false, "value": "/bin/sh", "arguments": ["sh", "-c", "exit 0"]})),
            task("long", &agent, 0.1, json!({"value": "exec sleep 60"})),
            task("huge", &agent, 64.0, json!({"value": "true"})),
        ]}}],
        "filters": {"refuse_seconds": 1}}});
    let r = call(&c, &ev.stream_id, accept).await;
    assert_eq!(r.status, 202, "ACCEPT: {}", r.body);

    let failed = ev.update(&c, "exit3", "TASK_FAILED").await;
    assert_eq!(
        failed["message"].as_str().unwrap().split(':').next(),
        Some("Command exited with status 3")
    );
    assert_eq!(failed["agent_id"], agent);
    assert_eq!(failed["executor_id"]["value"], "exit3");
    assert!(failed["timestamp"].as_f64().unwrap() > 1.0e9);
    use base64::Engine;
    let uuid = base64::engine::general_purpose::STANDARD
        .decode(failed["uuid"].as_str().expect("a uuid"))
        .expect("base64");
    assert_eq!(uuid.len(), 16);
    ev.update(&c, "argv", "TASK_FINISHED").await;
    // A task asking more than the offer: TASK_ERROR from the master, saying what it lacked.
    let huge = ev.update(&c, "huge", "TASK_ERROR").await;
    assert_eq!(huge["reason"], "REASON_TASK_INVALID", "{huge}");
    assert_eq!(huge["source"], "SOURCE_MASTER", "{huge}");
    assert!(
        huge["message"].as_str().unwrap().contains("cpus:64"),
        "{huge}"
    );
    ev.update(&c, "long", "TASK_RUNNING").await;

    let kill = json!({"framework_id": {"value": ev.framework_id}, "type": "KILL",
                      "kill": {"task_id": {"value": "long"}}});
    assert_eq!(call(&c, &ev.stream_id, kill).await.status, 202);
    ev.update(&c, "long", "TASK_KILLED").await;

    // Implicit reconciliation: the master answers without a uuid (nothing to acknowledge).
    let rec = json!({"framework_id": {"value": ev.framework_id}, "type": "RECONCILE", "reconcile": {"tasks": []}});
    assert_eq!(call(&c, &ev.stream_id, rec).await.status, 202);
    let explicit = json!({"framework_id": {"value": ev.framework_id}, "type": "RECONCILE",
        "reconcile": {"tasks": [{"task_id": {"value": "never-launched"}}]}});
    assert_eq!(call(&c, &ev.stream_id, explicit).await.status, 202);
    loop {
        let e = ev.next_of("UPDATE").await;
        let st = &e["update"]["status"];
        if st["task_id"]["value"] == "never-launched" {
            assert!(st.get("uuid").is_none(), "{st}");
            assert_eq!(st["source"], "SOURCE_MASTER");
            assert_eq!(st["reason"], "REASON_RECONCILIATION");
            break;
        }
    }

    for (kind, body) in [
        (
            "DECLINE",
            json!({"offer_ids": [{"value": "no-such-offer"}], "filters": {"refuse_seconds": 30}}),
        ),
        ("SUPPRESS", json!({})),
        ("REVIVE", json!({})),
    ] {
        let mut call_body = json!({"framework_id": {"value": ev.framework_id}, "type": kind});
        call_body[kind.to_ascii_lowercase()] = body;
        let r = call(&c, &ev.stream_id, call_body).await;
        assert_eq!(r.status, 202, "{kind}: {}", r.body);
    }

    // The legacy endpoints avmesos-cli reads, through the operator identity.
    let get = |path: &'static str| {
        let addr = c.gateway;
        async move {
            let r = http(addr, "GET", path, "", &[]).await;
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            serde_json::from_str::<Value>(&r.body).expect("JSON")
        }
    };
    let slaves = get("/slaves").await;
    assert_eq!(slaves["slaves"][0]["id"], agent["value"]);
    assert_eq!(slaves["slaves"][0]["hostname"], "node-a1");
    assert_eq!(slaves["slaves"][0]["active"], true);
    let fws = get("/master/frameworks/").await;
    let fw = fws["frameworks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == ev.framework_id.as_str())
        .expect("the framework is listed");
    assert_eq!(fw["name"], "e2e");
    assert_eq!(fw["active"], true);
    let tasks = get("/tasks?order=asc&limit=-1").await;
    let state_of = |id: &str| {
        tasks["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .map(|t| t["statuses"][0]["state"].clone())
    };
    assert_eq!(state_of("argv"), Some(json!("TASK_FINISHED")), "{tasks}");
    assert_eq!(state_of("long"), Some(json!("TASK_KILLED")), "{tasks}");
    let one = get("/tasks?task_id=exit3").await;
    assert_eq!(one["tasks"].as_array().unwrap().len(), 1, "{one}");
    assert_eq!(one["tasks"][0]["slave_id"], agent["value"]);
    let state = get("/master/state").await;
    assert_eq!(state["version"], "1.11.0");
    assert_eq!(state["slaves"].as_array().unwrap().len(), 1);
    // The v1 operator API's reads.
    let op = |kind: &'static str| {
        let addr = c.gateway;
        async move {
            let body = json!({ "type": kind }).to_string();
            let r = http(
                addr,
                "POST",
                "/api/v1",
                &body,
                &[("Content-Type", "application/json")],
            )
            .await;
            assert_eq!(r.status, 200, "{kind}: {}", r.body);
            serde_json::from_str::<Value>(&r.body).expect("JSON")
        }
    };
    let agents = op("GET_AGENTS").await;
    assert_eq!(agents["get_agents"]["agents"][0]["agent_info"]["id"], agent);
    let tasks = op("GET_TASKS").await;
    let done = tasks["get_tasks"]["completed_tasks"].as_array().unwrap();
    assert!(
        done.iter()
            .any(|t| t["task_id"]["value"] == "long" && t["state"] == "TASK_KILLED"),
        "{tasks}"
    );
    assert_eq!(op("GET_HEALTH").await["get_health"]["healthy"], true);
    let fws = op("GET_FRAMEWORKS").await;
    assert!(
        fws["get_frameworks"]["frameworks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["framework_info"]["id"]["value"] == ev.framework_id.as_str()),
        "{fws}"
    );
    let r = http(
        c.gateway,
        "POST",
        "/api/v1",
        r#"{"type":"DRAIN_AGENT"}"#,
        &[("Content-Type", "application/json")],
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.body.starts_with("DRAIN_AGENT:"), "{}", r.body);
    assert_eq!(http(c.gateway, "GET", "/health", "", &[]).await.status, 200);
    let redirect = http(c.gateway, "GET", "/master/redirect", "", &[]).await;
    assert_eq!(redirect.status, 307);
    assert_eq!(
        redirect.header("location"),
        Some(format!("//{}", c.gateway).as_str())
    );

    let td = json!({"framework_id": {"value": ev.framework_id}, "type": "TEARDOWN"});
    assert_eq!(call(&c, &ev.stream_id, td).await.status, 202);
    while ev.next().await.is_some() {}
    // The framework is gone from the gateway: its calls are refused.
    let r = call(
        &c,
        &ev.stream_id,
        json!({"framework_id": {"value": ev.framework_id}, "type": "REVIVE"}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_carry_the_mesos_status_and_say_why_and_the_gateway_keeps_serving() {
    let c = start(false).await;
    let r = http(c.gateway, "GET", "/slaves", "", &[]).await;
    assert_eq!(r.status, 501, "no operator identity: {}", r.body);
    assert!(r.body.contains("--operator-cert"), "{}", r.body);
    let post = |body: &'static str, headers: &'static [(&'static str, &'static str)]| {
        http(c.gateway, "POST", "/api/v1/scheduler", body, headers)
    };
    let json_ct: &[(&str, &str)] = &[("Content-Type", "application/json")];

    let r = post("{\"type\": \"SUBSCRIBE\", ", json_ct).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("parse"), "{}", r.body);
    assert!(r
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/plain")));
    let r = post("{\"type\":\"REVIVE\"}", &[]).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("Content-Type"), "{}", r.body);
    let r = post("{}", &[("Content-Type", "application/x-protobuf")]).await;
    assert_eq!(r.status, 415, "{}", r.body);
    let r = post(r#"{"subscribe":{}}"#, json_ct).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("'type'"), "{}", r.body);
    let r = post(
        r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"u","name":"n"}}}"#,
        &[
            ("Content-Type", "application/json"),
            ("Mesos-Stream-Id", "x"),
        ],
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("Mesos-Stream-Id"), "{}", r.body);
    let r = post(
        r#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"name":"n"}}}"#,
        json_ct,
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("user"), "{}", r.body);
    let r = http(c.gateway, "GET", "/api/v1/scheduler", "", &[]).await;
    assert_eq!(r.status, 405);

    let a = Events::subscribe(&c, info("a"), None).await;
    let b = Events::subscribe(&c, info("b"), None).await;
    assert_ne!(a.framework_id, b.framework_id);
    assert_ne!(a.stream_id, b.stream_id);
    let revive = |fw: &str| json!({"framework_id": {"value": fw}, "type": "REVIVE"});

    // B acting on A's framework id with its own stream id.
    let r = call(&c, &b.stream_id, revive(&a.framework_id)).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("didn't match"), "{}", r.body);
    // No stream id at all.
    let r = http(
        c.gateway,
        "POST",
        "/api/v1/scheduler",
        &revive(&a.framework_id).to_string(),
        json_ct,
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("Mesos-Stream-Id"), "{}", r.body);
    // An unknown framework.
    let r = call(&c, &a.stream_id, revive("nobody-0000")).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("cannot be found"), "{}", r.body);
    // Unsupported calls name themselves and why.
    let r = call(
        &c,
        &a.stream_id,
        json!({"framework_id": {"value": a.framework_id}, "type": "SHUTDOWN",
        "shutdown": {"executor_id": {"value": "e"}, "agent_id": {"value": "x"}}}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.body.starts_with("SHUTDOWN:"), "{}", r.body);
    let r = call(
        &c,
        &a.stream_id,
        json!({"framework_id": {"value": a.framework_id}, "type": "ACCEPT",
        "accept": {"offer_ids": [{"value": "o"}], "operations": [{"type": "LAUNCH_GROUP"}]}}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body.contains("LAUNCH_GROUP") && r.body.contains("default executor"),
        "the refusal names the operation and why: {}",
        r.body
    );

    // Still serving: both streams get heartbeats, and a re-subscription of A with its id
    // replaces its stream (the old one is told, then ends).
    let mut a = a;
    let mut b = b;
    b.next_of("HEARTBEAT").await;
    let old_stream = a.stream_id.clone();
    let mut a2 = Events::subscribe(
        &c,
        {
            let mut i = info("a");
            i["id"] = json!({"value": a.framework_id});
            i
        },
        Some(&a.framework_id.clone()),
    )
    .await;
    assert_eq!(a2.framework_id, a.framework_id);
    assert_ne!(a2.stream_id, old_stream);
    let last = loop {
        match a.next().await {
            Some(e) if e["type"] == "ERROR" => break e,
            Some(_) => continue,
            None => panic!("the old stream ended without an ERROR"),
        }
    };
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("failed over"),
        "{last}"
    );
    assert!(a.next().await.is_none(), "the old stream ends");
    let r = call(&c, &old_stream, revive(&a2.framework_id)).await;
    assert_eq!(
        r.status, 400,
        "the old stream id is no longer valid: {}",
        r.body
    );
    let r = call(&c, &a2.stream_id, revive(&a2.framework_id)).await;
    assert_eq!(r.status, 202, "{}", r.body);
    a2.next_of("HEARTBEAT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_failover_ends_the_stream_and_a_resubscription_gets_the_same_session() {
    let mut c = start(false).await;
    let mut ev = Events::subscribe(&c, info("failover"), None).await;
    let offers = ev.next_of("OFFERS").await;
    let offer = &offers["offers"]["offers"][0];
    let agent = offer["agent_id"].clone();
    let accept = json!({"framework_id": {"value": ev.framework_id}, "type": "ACCEPT", "accept": {
        "offer_ids": [offer["id"]],
        "operations": [{"type": "LAUNCH", "launch": {"task_infos": [
            task("survivor", &agent, 0.1, json!({"value": "exec sleep 60"}))]}}]}});
    assert_eq!(call(&c, &ev.stream_id, accept).await.status, 202);
    ev.update(&c, "survivor", "TASK_RUNNING").await;

    c.restart_master().await;
    // The stream ends (a new stream, not a silent gap) ...
    let deadline = Instant::now() + WAIT;
    while ev.next().await.is_some() {
        assert!(
            Instant::now() < deadline,
            "the stream did not end at the failover"
        );
    }
    // ... and until the client re-subscribes the framework is not subscribed.
    let revive = json!({"framework_id": {"value": ev.framework_id}, "type": "REVIVE"});
    let r = call(&c, &ev.stream_id, revive.clone()).await;
    assert_eq!(r.status, 403, "{}", r.body);

    let mut again = info("failover");
    again["id"] = json!({"value": ev.framework_id});
    let mut ev2 = Events::subscribe(&c, again, Some(&ev.framework_id.clone())).await;
    assert_eq!(ev2.framework_id, ev.framework_id);
    assert_eq!(
        call(&c, &ev.stream_id, revive).await.status,
        400,
        "the old stream id"
    );
    // Implicit reconciliation reports the running task, once.
    let rec = json!({"framework_id": {"value": ev2.framework_id}, "type": "RECONCILE",
                     "reconcile": {"tasks": []}});
    let deadline = Instant::now() + WAIT;
    let mut running = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "no reconciliation answer for the survivor"
        );
        let r = call(&c, &ev2.stream_id, rec.clone()).await;
        assert_eq!(r.status, 202, "{}", r.body);
        let e = ev2.next_of("UPDATE").await;
        let st = &e["update"]["status"];
        if st["task_id"]["value"] == "survivor" && st.get("uuid").is_none() {
            assert_eq!(st["state"], "TASK_RUNNING", "{st}");
            running += 1;
            break;
        }
    }
    assert_eq!(running, 1);
    let kill = json!({"framework_id": {"value": ev2.framework_id}, "type": "KILL",
                      "kill": {"task_id": {"value": "survivor"}}});
    assert_eq!(call(&c, &ev2.stream_id, kill).await.status, 202);
    ev2.update(&c, "survivor", "TASK_KILLED").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn update_framework_changes_the_roles_on_the_same_stream_and_refusals_say_why() {
    let c = start(true).await;
    let mut ev = Events::subscribe(&c, info("updating"), None).await;
    let first = ev.next_of("OFFERS").await;
    assert_eq!(
        first["offers"]["offers"][0]["resources"][0]["role"], "*",
        "{first}"
    );
    let framework_id = ev.framework_id.clone();
    let update = |info: Value, suppressed: Value| {
        json!({"framework_id": {"value": framework_id}, "type": "UPDATE_FRAMEWORK",
               "update_framework": {"framework_info": info, "suppressed_roles": suppressed}})
    };
    let mut updated = info("updating");
    updated["id"] = json!({"value": ev.framework_id});
    updated["roles"] = json!(["gw-fw"]);
    updated["failover_timeout"] = json!(7);
    updated["capabilities"] = json!([{"type": "MULTI_ROLE"}]);

    // Refusals: no body, another id, a role the master refuses, a wrong stream id.
    let r = call(
        &c,
        &ev.stream_id,
        json!({"framework_id": {"value": ev.framework_id}, "type": "UPDATE_FRAMEWORK"}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("'update_framework'"), "{}", r.body);
    let mut other = updated.clone();
    other["id"] = json!({"value": "someone-else"});
    let r = call(&c, &ev.stream_id, update(other, json!([]))).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("'framework_info.id'"), "{}", r.body);
    let mut empty_role = updated.clone();
    empty_role["roles"] = json!([""]);
    let r = call(&c, &ev.stream_id, update(empty_role, json!([]))).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body
            .starts_with("UPDATE_FRAMEWORK refused by the Corral master"),
        "{}",
        r.body
    );
    let mut forbidden = updated.clone();
    forbidden["roles"] = json!(["web"]);
    let r = call(&c, &ev.stream_id, update(forbidden, json!([]))).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body.contains("may not subscribe with role 'web'"),
        "{}",
        r.body
    );
    let r = call(&c, "not-the-stream", update(updated.clone(), json!([]))).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("didn't match"), "{}", r.body);

    // The update: 200, the same stream goes on, and offers now come for the principal's own role.
    let r = call(&c, &ev.stream_id, update(updated.clone(), json!([]))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let deadline = Instant::now() + WAIT;
    loop {
        let offers = ev.next_of("OFFERS").await;
        let o = &offers["offers"]["offers"][0];
        if o["allocation_info"]["role"] == "gw-fw" {
            assert_eq!(o["resources"][0]["allocation_info"]["role"], "gw-fw", "{o}");
            break;
        }
        assert!(Instant::now() < deadline, "no offer for role gw-fw: {o}");
    }
    let frameworks = http(c.gateway, "GET", "/frameworks", "", &[]).await;
    let v: Value = serde_json::from_str(&frameworks.body).unwrap();
    let f = v["frameworks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == ev.framework_id.as_str())
        .expect("the framework is listed")
        .clone();
    assert_eq!(f["roles"], json!(["gw-fw"]), "{f}");

    // With suppressed_roles the framework is suppressed once the update is answered.
    let r = call(&c, &ev.stream_id, update(updated, json!(["gw-fw"]))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let operator = framework::ClientOptions::new(
        vec![c.master.to_string()],
        identity(
            &c.dir.path().join("certs"),
            proto::Role::Operator,
            "gw-op-check",
        ),
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let state = match framework::operator_call(&operator, proto::OperatorCall::GetState).await {
            Ok(proto::OperatorReply::State(s)) => s,
            other => panic!("GetState: {other:?}"),
        };
        let f = state
            .frameworks
            .iter()
            .find(|f| f.id.as_str() == ev.framework_id)
            .expect("the framework");
        assert_eq!(f.roles, vec!["gw-fw".to_owned()]);
        if f.suppressed {
            break;
        }
        assert!(Instant::now() < deadline, "never suppressed: {f:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ev.next_of("HEARTBEAT").await;
}
