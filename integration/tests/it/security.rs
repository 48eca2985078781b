//! Who may talk to the master, and what happens to peers that send garbage: each refusal is
//! clear, and the master keeps serving everyone else.

use integration::{stderr, Certs, Cluster};
use proto::{ClientFrame, ErrorCode, OperatorCall, Role, ServerFrame};
use std::sync::Arc;
use std::time::Duration;
use transport::{Identity, TlsFiles};

const T: Duration = Duration::from_secs(60);

fn assert_master_still_serves(c: &Cluster) {
    let out = c.client("fw", &["run", "--", "true"], T);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the master stopped serving:\n{}",
        stderr(&out)
    );
}

fn rt() -> tokio::runtime::Runtime {
    transport::install_crypto_provider();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn identity(c: &Cluster, name: &str) -> Arc<Identity> {
    Arc::new(
        Identity::load(&TlsFiles {
            ca: c.certs.ca(),
            cert: c.certs.cert(name),
            key: c.certs.key(name),
        })
        .expect("load identity"),
    )
}

#[test]
fn wrong_role_certificates_are_refused_for_each_call() {
    let mut c = Cluster::start_master(&[]);
    c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    // An agent certificate cannot subscribe as a framework.
    let out = c.client("a1", &["run", "--", "true"], T);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.contains("Forbidden") || err.contains("refused"),
        "{err}"
    );
    assert!(err.contains("agent"), "the error names the role: {err}");
    // A framework certificate cannot make operator calls.
    let out = c.client("fw", &["state"], T);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("operator"), "{}", stderr(&out));
    // An operator certificate cannot register as an agent.
    let rt = rt();
    rt.block_on(async {
        let id = identity(&c, "op");
        let ep = transport::client_endpoint_for(c.master_addr, &id).expect("endpoint");
        let conn = transport::connect(&ep, c.master_addr, Role::Master, None)
            .await
            .expect("connect");
        let (mut tx, mut rx) =
            transport::open_framed::<ClientFrame, ServerFrame>(&conn, proto::MAX_FRAME_LEN)
                .await
                .expect("stream");
        let info = proto::AgentInfo {
            hostname: "evil".into(),
            resources: "cpus:64;mem:64GiB".parse().expect("resources"),
            attributes: Default::default(),
            version: proto::ProtocolVersion::CURRENT,
            software_version: String::new(),
            reserved: Default::default(),
        };
        tx.send(&ClientFrame::Agent(proto::AgentToMaster::Register {
            agent_id: None,
            info,
            tasks: vec![],
        }))
        .await
        .expect("send");
        match rx.recv().await {
            Ok(Some(ServerFrame::Error(e))) => assert_eq!(e.code, ErrorCode::Forbidden, "{e:?}"),
            other => panic!("expected Forbidden, got {other:?}"),
        }
    });
    assert_master_still_serves(&c);
}

#[test]
fn certificates_without_trust_are_refused_at_the_handshake() {
    let mut c = Cluster::start_master(&[]);
    c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);

    // From another CA.
    let other = Certs::new(&c.dir.path().join("other-ca"));
    other.issue("framework", "intruder");
    let flags = [
        "run".to_string(),
        "--master".into(),
        c.master_addr.to_string(),
        "--ca".into(),
        c.certs.ca().display().to_string(),
        "--cert".into(),
        other.cert("intruder").display().to_string(),
        "--key".into(),
        other.key("intruder").display().to_string(),
        "--".into(),
        "true".into(),
    ];
    let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let out = integration::corral(&refs, &[], T);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).to_lowercase().contains("certificate"),
        "{}",
        stderr(&out)
    );
    // The CLI refuses to use it; a client that tries anyway is refused by the master itself.
    let err = rt().block_on(attempt_unverified(
        &c,
        other.cert("intruder"),
        other.key("intruder"),
    ));
    assert!(
        err.contains("refused our certificate") && err.contains("CA"),
        "{err}"
    );

    // Expired.
    let now = time::OffsetDateTime::now_utc();
    certs::issue_with_validity(
        &c.certs.dir,
        &certs::IssueRequest {
            role: Role::Framework,
            name: "old".into(),
            sans: vec![],
            days: 1,
        },
        now - time::Duration::days(10),
        now - time::Duration::days(1),
        false,
    )
    .expect("issue expired");
    let out = c.client("old", &["run", "--", "true"], T);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out).to_lowercase();
    assert!(err.contains("expired"), "{err}");
    let err = rt().block_on(attempt_unverified(
        &c,
        c.certs.cert("old"),
        c.certs.key("old"),
    ));
    assert!(
        err.contains("refused our certificate") && err.contains("expired"),
        "{err}"
    );

    // No client certificate at all, from a client that accepts the master (it trusts the CA
    // and checks the role, as every client does): the master must refuse it, and say why.
    let rt = rt();
    rt.block_on(async {
        let ep = transport::testing::client_endpoint_without_certificate(&c.certs.ca())
            .expect("endpoint");
        let err = match transport::connect(&ep, c.master_addr, Role::Master, None).await {
            Err(e) => e,
            Ok(conn) => {
                // TLS 1.3: the refusal surfaces on first use.
                let used = async {
                    let (mut tx, mut rx) = transport::open_framed::<ClientFrame, ServerFrame>(
                        &conn,
                        proto::MAX_FRAME_LEN,
                    )
                    .await?;
                    tx.send(&ClientFrame::Operator(OperatorCall::GetState))
                        .await?;
                    rx.recv().await
                };
                match tokio::time::timeout(Duration::from_secs(10), used).await {
                    Ok(Err(e)) => e,
                    Ok(Ok(reply)) => panic!("a client without a certificate was served: {reply:?}"),
                    Err(_) => panic!("no refusal within 10 s for a client without a certificate"),
                }
            }
        };
        assert!(err.is_certificate_refused(), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("we presented none"), "{msg}");
    });
    assert_master_still_serves(&c);
}

/// Subscribes as a framework with a certificate the client side does not check, and returns
/// the error the master's refusal produced.
async fn attempt_unverified(
    c: &Cluster,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
) -> String {
    let id = Identity::load_unverified(&TlsFiles {
        ca: c.certs.ca(),
        cert,
        key,
    })
    .expect("load");
    let ep = transport::client_endpoint_for(c.master_addr, &id).expect("endpoint");
    let conn = match transport::connect(&ep, c.master_addr, Role::Master, None).await {
        Ok(conn) => conn,
        Err(e) => return e.to_string(),
    };
    let attempt = async {
        let (mut tx, mut rx) =
            transport::open_framed::<ClientFrame, ServerFrame>(&conn, proto::MAX_FRAME_LEN).await?;
        let info = proto::FrameworkInfo {
            id: None,
            name: "intruder".into(),
            roles: vec![],
            failover_timeout_ms: 0,
            capabilities: vec![],
            version: proto::ProtocolVersion::CURRENT,
        };
        tx.send(&ClientFrame::Framework(proto::FrameworkCall::Subscribe {
            info,
        }))
        .await?;
        rx.recv().await
    };
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(reply)) => panic!("the master served an untrusted certificate: {reply:?}"),
        Err(_) => panic!("no answer within 10 s"),
    }
}

/// Sends raw bytes on a fresh stream as operator `op` and returns what the master answered.
async fn raw_exchange(c: &Cluster, bytes: &[u8], finish: bool) -> Option<ServerFrame> {
    let id = identity(c, "op");
    let ep = transport::client_endpoint_for(c.master_addr, &id).expect("endpoint");
    let conn = transport::connect(&ep, c.master_addr, Role::Master, None)
        .await
        .expect("connect");
    let got = tokio::time::timeout(
        Duration::from_secs(10),
        transport::testing::raw_exchange(&conn, bytes, finish, 1 << 20),
    )
    .await
    .expect("the master answered within 10 s")
    .unwrap_or_default();
    proto::decode::<ServerFrame>(&got, proto::MAX_FRAME_LEN)
        .ok()
        .flatten()
        .map(|(f, _)| f)
}

#[test]
fn garbage_truncated_and_oversized_frames_close_only_that_stream() {
    let mut c = Cluster::start_master(&[]);
    c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    let rt = rt();
    rt.block_on(async {
        // Garbage body behind a plausible header.
        let mut garbage = 12u32.to_be_bytes().to_vec();
        garbage.extend_from_slice(&[0xc1; 12]);
        match raw_exchange(&c, &garbage, true).await {
            Some(ServerFrame::Error(e)) => assert_eq!(e.code, ErrorCode::MalformedFrame, "{e:?}"),
            other => panic!("expected MalformedFrame, got {other:?}"),
        }
        // A header announcing 100 bytes, then the stream ends after 10.
        let mut truncated = 100u32.to_be_bytes().to_vec();
        truncated.extend_from_slice(&[0u8; 10]);
        match raw_exchange(&c, &truncated, true).await {
            Some(ServerFrame::Error(e)) => assert_eq!(e.code, ErrorCode::MalformedFrame, "{e:?}"),
            other => panic!("expected MalformedFrame for a truncated frame, got {other:?}"),
        }
        // A header announcing 4 GiB: refused from the header, nothing buffered.
        let oversized = u32::MAX.to_be_bytes().to_vec();
        match raw_exchange(&c, &oversized, false).await {
            Some(ServerFrame::Error(e)) => {
                assert_eq!(e.code, ErrorCode::MalformedFrame, "{e:?}");
                assert!(e.message.contains("exceeds"), "{e:?}");
            }
            other => panic!("expected an oversized-frame error, got {other:?}"),
        }
        // Random bytes with no valid header at all, many streams at once.
        let mut handles = Vec::new();
        for i in 0..20u8 {
            let bytes: Vec<u8> = (0..64).map(|j| j ^ i.wrapping_mul(37)).collect();
            handles.push(bytes);
        }
        for bytes in handles {
            let _ = raw_exchange(&c, &bytes, true).await;
        }
    });
    assert_master_still_serves(&c);
}
