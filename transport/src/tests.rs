//! Unit tests of the pure parts: the expectation server name and the error translation. The
//! real-QUIC behaviour is tested in `tests/it`.

use super::*;
use crate::endpoint::{client_transport_config, transport_config};
use crate::error::{connect_error, connection_error};
use std::net::SocketAddr;

#[test]
fn expectation_round_trips_for_every_role_and_odd_names() {
    let long = "x".repeat(certs::MAX_NAME_LEN);
    let names = [
        None,
        Some("m1"),
        Some("Node_1.example-x"),
        Some("11"),
        Some(long.as_str()),
    ];
    for role in Role::ALL {
        for name in names {
            let sn = expectation_server_name(role, name);
            // Must be acceptable to rustls as a DNS server name.
            rustls::pki_types::ServerName::try_from(sn.clone())
                .unwrap_or_else(|e| panic!("{sn}: {e}"));
            assert_eq!(
                parse_expectation(&sn),
                Some((role, name.map(str::to_owned))),
                "{sn}"
            );
        }
    }
}

#[test]
fn other_server_names_carry_no_expectation() {
    for sn in [
        "localhost",
        "master.corral",
        "root.corral.invalid",
        "zz.master.corral.invalid",
        "6.master.corral.invalid",
    ] {
        assert_eq!(parse_expectation(sn), None, "{sn}");
    }
}

fn closed_with_alert(alert: u8, reason: &str) -> quinn::ConnectionError {
    quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
        error_code: quinn::TransportErrorCode::crypto(alert),
        frame_type: None,
        reason: reason.as_bytes().to_vec().into(),
    })
}

#[test]
fn peer_certificate_alerts_say_the_peer_refused_us() {
    for (alert, word) in [
        (116, "required"),
        (48, "unknown CA"),
        (45, "expired"),
        (42, "bad"),
    ] {
        let e = connection_error("the master at 10.0.0.1:5050", closed_with_alert(alert, ""));
        assert!(e.is_certificate_refused(), "{alert}: {e:?}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("the master at 10.0.0.1:5050 refused our certificate: "),
            "{msg}"
        );
        assert!(msg.contains(word), "{msg}");
    }
}

#[test]
fn alpn_alert_says_no_application_protocol() {
    let e = connection_error("the master at 1.2.3.4:5", closed_with_alert(120, "x"));
    assert!(
        matches!(e, TransportError::NoApplicationProtocol { .. }),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "no application protocol: the master at 1.2.3.4:5 does not speak corral/1"
    );
}

#[test]
fn timeouts_while_connecting_name_the_address() {
    let addr: SocketAddr = "192.0.2.1:5050".parse().unwrap();
    let e = connect_error(
        "the master at 192.0.2.1:5050",
        addr,
        quinn::ConnectionError::TimedOut,
    );
    assert_eq!(e.to_string(), "timed out connecting to 192.0.2.1:5050");
    // Later, the same failure is a lost connection.
    let e = connection_error(
        "the master at 192.0.2.1:5050",
        quinn::ConnectionError::TimedOut,
    );
    assert!(matches!(e, TransportError::ConnectionLost { .. }), "{e:?}");
}

#[test]
fn application_close_reports_code_and_reason() {
    let e = connection_error(
        "the agent 'a' at 1.2.3.4:5",
        quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: 7u32.into(),
            reason: b"shutting down".to_vec().into(),
        }),
    );
    assert_eq!(
        e.to_string(),
        "connection to the agent 'a' at 1.2.3.4:5 lost: closed by the peer (code 7: shutting down)"
    );
}

#[test]
fn transport_config_builds() {
    // The relations between the limits are checked at compile time in endpoint.rs.
    let _ = transport_config();
    let _ = client_transport_config();
}

#[tokio::test]
async fn resolve_names_and_explains_failures() {
    assert_eq!(
        resolve("127.0.0.1:5050").await.unwrap(),
        "127.0.0.1:5050".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(resolve("[::1]:7").await.unwrap().port(), 7);
    let a = resolve("localhost:5050").await.unwrap();
    assert!(a.ip().is_loopback() && a.port() == 5050, "{a}");
    for (bad, why) in [
        ("localhost", "HOST:PORT"),
        ("localhost:http", "not a port"),
        (":5050", "HOST:PORT"),
        ("no-such-host.invalid:5050", "no-such-host.invalid:5050"),
    ] {
        let e = resolve(bad).await.unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(bad) && msg.contains(why), "{msg}");
    }
}

#[test]
fn rejected_certificate_reasons_are_explained() {
    use crate::error::certificate_reason;
    for raw in [
        "invalid peer certificate: UnknownIssuer",
        "invalid peer certificate: BadSignature",
    ] {
        assert!(
            certificate_reason(raw).starts_with("it is not signed by our cluster CA"),
            "{raw}"
        );
    }
    assert_eq!(
        certificate_reason("peer sent no certificates"),
        "it presented no certificate"
    );
    // Our verifiers' own refusals lose rustls's Debug wrapping.
    assert_eq!(
        certificate_reason(
            "invalid peer certificate: Other(OtherError(IdentityMismatch(\"the master did not \
             present the CA certificate sha256:ab that the join token pins\")))"
        ),
        "the master did not present the CA certificate sha256:ab that the join token pins"
    );
    let e = connection_error("the agent at 1.2.3.4:5", closed_with_alert(51, ""));
    assert!(e.is_certificate_refused(), "{e:?}");
}
