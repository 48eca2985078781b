//! Mutual TLS: who gets in, who is refused, and what the error says.

use crate::support::*;
use transport::{PeerIdentity, Role, TransportError};

#[tokio::test]
async fn mtls_round_trip_and_both_sides_know_who_is_who() {
    within(async {
        let pki = Pki::new();
        let master = pki.identity(Role::Master, "m1");
        let agent = pki.identity(Role::Agent, "a1");
        assert_eq!(
            agent.peer(),
            &PeerIdentity {
                role: Role::Agent,
                name: "a1".into()
            }
        );
        let (sep, addr) = server(&master);

        let server = tokio::spawn(async move {
            let (conn, who) = accept_one(&sep).await.unwrap();
            assert_eq!(transport::peer_identity(&conn).unwrap(), who);
            let (mut tx, mut rx) = transport::accept_framed::<Msg, Msg>(&conn, MAX)
                .await
                .unwrap();
            let mut n = 0;
            while let Some(msg) = rx.recv().await.unwrap() {
                let reply = match msg {
                    Msg::Ping(i) => Msg::Ping(i + 1),
                    Msg::Text(t) => Msg::Text(t.to_uppercase()),
                };
                tx.send(&reply).await.unwrap();
                n += 1;
            }
            tx.finish_and_wait().await.unwrap();
            (who, n)
        });

        let cep = transport::client_endpoint(&agent).unwrap();
        let conn = transport::connect(&cep, addr, Role::Master, Some("m1"))
            .await
            .unwrap();
        assert_eq!(
            transport::peer_identity(&conn).unwrap(),
            PeerIdentity {
                role: Role::Master,
                name: "m1".into()
            }
        );
        let (mut tx, mut rx) = transport::open_framed::<Msg, Msg>(&conn, MAX)
            .await
            .unwrap();
        tx.send(&Msg::Ping(1)).await.unwrap();
        tx.send(&Msg::Text("hello".into())).await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), Some(Msg::Ping(2)));
        assert_eq!(rx.recv().await.unwrap(), Some(Msg::Text("HELLO".into())));
        tx.send(&Msg::Ping(41)).await.unwrap();
        tx.finish().await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), Some(Msg::Ping(42)));
        assert_eq!(rx.recv().await.unwrap(), None);
        assert_eq!(rx.recv().await.unwrap(), None, "end of stream is sticky");

        let (who, n) = server.await.unwrap();
        assert_eq!(
            who,
            PeerIdentity {
                role: Role::Agent,
                name: "a1".into()
            }
        );
        assert_eq!(n, 3);
    })
    .await
}

#[tokio::test]
async fn any_name_is_accepted_when_none_is_expected() {
    within(async {
        let pki = Pki::new();
        // A name that is no DNS name at all: only the corral:// SAN identifies it.
        let (sep, addr) = server(&pki.identity(Role::Master, "Master_01"));
        let server = tokio::spawn(async move { accept_one(&sep).await.map(|(_, id)| id) });
        let cep = transport::client_endpoint(&pki.identity(Role::Operator, "ops")).unwrap();
        let conn = transport::connect(&cep, addr, Role::Master, None)
            .await
            .unwrap();
        assert_eq!(transport::peer_identity(&conn).unwrap().name, "Master_01");
        let who = server.await.unwrap().unwrap();
        assert_eq!(who.role, Role::Operator);
    })
    .await
}

#[tokio::test]
async fn client_rejects_a_server_with_the_wrong_role() {
    within(async {
        let pki = Pki::new();
        let (sep, addr) = server(&pki.identity(Role::Agent, "a1"));
        let _server = tokio::spawn(async move {
            loop {
                let _ = accept_one(&sep).await;
            }
        });
        let cep = transport::client_endpoint(&pki.identity(Role::Framework, "f")).unwrap();
        let err = transport::connect(&cep, addr, Role::Master, None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, TransportError::PeerCertificate { .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("the master at {addr}"))
                && msg.contains("expected a master certificate")
                && msg.contains("agent 'a1'"),
            "{msg}"
        );

        // Right role, wrong name.
        let err = transport::connect(&cep, addr, Role::Agent, Some("a2"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("'a2'"), "{err}");
        // Right role and name.
        transport::connect(&cep, addr, Role::Agent, Some("a1"))
            .await
            .unwrap();
    })
    .await
}

#[tokio::test]
async fn client_rejects_a_server_from_another_ca() {
    within(async {
        let ours = Pki::new();
        let theirs = Pki::new();
        let (sep, addr) = server(&theirs.identity(Role::Master, "m1"));
        let _server = tokio::spawn(async move { accept_one(&sep).await.map(|_| ()) });
        let cep = transport::client_endpoint(&ours.identity(Role::Agent, "a")).unwrap();
        let err = transport::connect(&cep, addr, Role::Master, None)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("not signed by our cluster CA"),
            "{err}"
        );
    })
    .await
}

#[tokio::test]
async fn server_refuses_a_client_without_certificate() {
    within(async {
        let pki = Pki::new();
        let (sep, addr) = server(&pki.identity(Role::Master, "m1"));
        let server = tokio::spawn(async move { accept_one(&sep).await.map(|(_, id)| id) });

        // A client that trusts our CA and checks the server's role (so it accepts the server)
        // but presents no certificate.
        let cep = transport::testing::client_endpoint_without_certificate(&pki.ca()).unwrap();
        let conn = transport::connect(&cep, addr, Role::Master, Some("m1")).await;
        let err = refusal(conn).await;
        assert!(err.is_certificate_refused(), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("refused our certificate") && msg.contains("we presented none"),
            "{msg}"
        );

        let server_err = server.await.unwrap().unwrap_err();
        assert!(
            server_err
                .to_string()
                .contains("presented an unacceptable certificate: it presented no certificate"),
            "{server_err}"
        );
    })
    .await
}

#[tokio::test]
async fn server_refuses_a_client_certificate_from_another_ca() {
    within(async {
        let ours = Pki::new();
        let theirs = Pki::new();
        let (sep, addr) = server(&ours.identity(Role::Master, "m1"));
        let server = tokio::spawn(async move { accept_one(&sep).await.map(|(_, id)| id) });

        // Trusts our CA (so it accepts the server) but its certificate is from another CA.
        let mut files = theirs.issue(Role::Agent, "intruder");
        files.ca = ours.ca();
        let err = transport::Identity::load(&files).unwrap_err();
        assert!(
            err.to_string().contains("not signed by our cluster CA")
                && err.to_string().contains("intruder.pem"),
            "load must catch the mistake: {err}"
        );
        let intruder = transport::Identity::load_unverified(&files).unwrap();
        let cep = transport::client_endpoint(&intruder).unwrap();
        let err = refusal(transport::connect(&cep, addr, Role::Master, None).await).await;
        assert!(err.is_certificate_refused(), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!(
                "the master 'm1' at {addr} refused our certificate"
            )) && msg.contains("unknown CA"),
            "{msg}"
        );

        let server_err = server.await.unwrap().unwrap_err();
        assert!(
            server_err
                .to_string()
                .contains("not signed by our cluster CA"),
            "{server_err}"
        );
    })
    .await
}

#[tokio::test]
async fn server_refuses_an_expired_client_certificate() {
    within(async {
        let pki = Pki::new();
        let (sep, addr) = server(&pki.identity(Role::Master, "m1"));
        let server = tokio::spawn(async move { accept_one(&sep).await.map(|(_, id)| id) });

        let files = pki.issue_expired(Role::Agent, "old");
        let err = transport::Identity::load(&files).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
        let old = transport::Identity::load_unverified(&files).unwrap();
        let cep = transport::client_endpoint(&old).unwrap();
        let err = refusal(transport::connect(&cep, addr, Role::Master, None).await).await;
        assert!(err.is_certificate_refused(), "{err:?}");
        assert!(err.to_string().contains("expired"), "{err}");

        let server_err = server.await.unwrap().unwrap_err();
        assert!(server_err.to_string().contains("expired"), "{server_err}");
    })
    .await
}

#[tokio::test]
async fn client_rejects_an_expired_server_certificate() {
    within(async {
        let pki = Pki::new();
        let old =
            transport::Identity::load_unverified(&pki.issue_expired(Role::Master, "m1")).unwrap();
        let (sep, addr) = server(&old);
        let _server = tokio::spawn(async move { accept_one(&sep).await.map(|_| ()) });
        let cep = transport::client_endpoint(&pki.identity(Role::Agent, "a")).unwrap();
        let err = transport::connect(&cep, addr, Role::Master, None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, TransportError::PeerCertificate { .. })
                && err.to_string().contains("expired"),
            "{err:?}"
        );
    })
    .await
}

#[tokio::test]
async fn alpn_mismatch_says_the_peer_does_not_speak_our_protocol() {
    within(async {
        let pki = Pki::new();
        let (sep, addr) = server(&pki.identity(Role::Master, "m1"));
        let server = tokio::spawn(async move { accept_one(&sep).await.map(|(_, id)| id) });

        let agent = pki.identity(Role::Agent, "a");
        let mut tls = transport::raw::client_tls_config(&agent).unwrap();
        tls.alpn_protocols = vec![b"corral/2".to_vec()];
        let cfg = transport::raw::quic_client_config(tls).unwrap();
        let cep = transport::client_endpoint(&agent).unwrap();
        let err = transport::raw::connect_with_config(&cep, cfg, addr, Role::Master, None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, TransportError::NoApplicationProtocol { .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("no application protocol: the master at {addr} does not speak corral/1")
        );
        let server_err = server.await.unwrap().unwrap_err();
        assert!(
            matches!(server_err, TransportError::NoApplicationProtocol { .. }),
            "{server_err:?}"
        );
    })
    .await
}

#[tokio::test]
async fn ipv6_loopback_works_with_client_endpoint_for() {
    within(async {
        let pki = Pki::new();
        let master = pki.identity(Role::Master, "m1");
        let Ok(sep) = transport::server_endpoint("[::1]:0".parse().unwrap(), &master) else {
            eprintln!("skipping: no IPv6 loopback on this host");
            return;
        };
        let addr = sep.local_addr().unwrap();
        let server = tokio::spawn(async move { accept_one(&sep).await.map(|(_, id)| id) });
        let agent = pki.identity(Role::Agent, "a");
        let cep = transport::client_endpoint_for(addr, &agent).unwrap();
        transport::connect(&cep, addr, Role::Master, Some("m1"))
            .await
            .unwrap();
        assert_eq!(server.await.unwrap().unwrap().name, "a");
    })
    .await
}

#[tokio::test]
async fn server_endpoint_can_also_connect_out() {
    within(async {
        let pki = Pki::new();
        let (sep1, addr1) = server(&pki.identity(Role::Master, "m1"));
        let (sep2, _) = server(&pki.identity(Role::Master, "m2"));
        let server = tokio::spawn(async move { accept_one(&sep1).await.map(|(_, id)| id) });
        transport::connect(&sep2, addr1, Role::Master, Some("m1"))
            .await
            .unwrap();
        assert_eq!(server.await.unwrap().unwrap().name, "m2");
    })
    .await
}

#[tokio::test]
async fn plain_endpoint_connect_without_expectation_is_refused() {
    within(async {
        let pki = Pki::new();
        let (sep, addr) = server(&pki.identity(Role::Master, "m1"));
        let _server = tokio::spawn(async move { accept_one(&sep).await.map(|_| ()) });
        let cep = transport::client_endpoint(&pki.identity(Role::Agent, "a")).unwrap();
        // Bypassing transport::connect: the default config must not accept "whoever answers".
        let res = cep.quinn().connect(addr, "localhost").unwrap().await;
        let err = res.unwrap_err();
        assert!(
            err.to_string()
                .contains("carries no expected corral identity"),
            "{err}"
        );
    })
    .await
}
