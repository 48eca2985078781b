//! A renewed client certificate replaces the old one under every clone of an identity
//! (`Identity::reload`), and a joining node trusts only a master that presents the CA with the
//! pinned hash (`Identity::joining`, `server_endpoint_accepting_joins`).

use crate::support::*;
use certs::IssueRequest;
use transport::{Identity, PeerIdentity, Role, TransportError};

fn reissue(pki: &Pki, name: &str) {
    let req = IssueRequest {
        role: Role::Agent,
        name: name.into(),
        sans: vec![],
        days: 1,
    };
    let now = time::OffsetDateTime::now_utc();
    certs::issue_with_validity(
        pki.path(),
        &req,
        now - time::Duration::hours(1),
        now + time::Duration::days(1),
        true,
    )
    .unwrap();
}

#[tokio::test]
async fn a_reloaded_certificate_is_presented_by_every_clone_on_new_connections() {
    within(async {
        let pki = Pki::new();
        let (sep, addr) = server(&pki.identity(Role::Master, "m1"));
        let files = pki.issue_expired(Role::Agent, "a");
        let id = Identity::load_unverified(&files).unwrap();
        let clone = id.clone();

        let server = tokio::spawn(async move {
            let first = accept_one(&sep).await.map(|(_, id)| id);
            let second = accept_one(&sep).await.map(|(_, id)| id);
            (first, second)
        });
        let cep = transport::client_endpoint(&clone).unwrap();
        let err = refusal(transport::connect(&cep, addr, Role::Master, None).await).await;
        assert!(err.is_certificate_refused(), "{err:?}");

        // The renewed files replace the certificate for every clone; a certificate for someone
        // else is refused and changes nothing.
        reissue(&pki, "a");
        id.reload().unwrap();
        let other = pki.issue(Role::Agent, "b");
        let bad = Identity::load_unverified(&other).unwrap();
        std::fs::copy(&other.cert, &files.cert).unwrap();
        std::fs::copy(&other.key, &files.key).unwrap();
        let err = id.reload().unwrap_err();
        assert!(err.to_string().contains("not agent 'a'"), "{err}");
        drop(bad);

        let cep = transport::client_endpoint(&clone).unwrap();
        transport::connect(&cep, addr, Role::Master, None)
            .await
            .expect("the renewed certificate is presented");
        let (first, second) = server.await.unwrap();
        assert!(first.is_err(), "{first:?}");
        assert_eq!(
            second.unwrap(),
            PeerIdentity {
                role: Role::Agent,
                name: "a".into()
            }
        );
    })
    .await
}

fn ca_hash(pki: &Pki) -> [u8; 32] {
    let pem = std::fs::read_to_string(pki.ca()).unwrap();
    certs::ca_hash(&certs::first_pem_der_of(&pem).unwrap())
}

fn joiner() -> PeerIdentity {
    PeerIdentity {
        role: Role::Agent,
        name: "new".into(),
    }
}

#[tokio::test]
async fn a_joining_node_reaches_only_a_master_presenting_the_pinned_ca() {
    within(async {
        let pki = Pki::new();
        let master = pki.identity(Role::Master, "m1");
        let sep =
            transport::server_endpoint_accepting_joins("127.0.0.1:0".parse().unwrap(), &master)
                .unwrap();
        let addr = sep.local_addr().unwrap();
        let accepted = tokio::spawn(async move { accept_one(&sep).await.map(|(_, id)| id) });

        let joining = Identity::joining(ca_hash(&pki), joiner());
        let cep = transport::client_endpoint(&joining).unwrap();
        transport::connect(&cep, addr, Role::Master, None)
            .await
            .expect("the pinned CA is in the master's chain");
        // The master knows the client presented nothing (it then allows only the join call).
        let err = accepted.await.unwrap().unwrap_err();
        assert!(matches!(err, TransportError::NoPeerCertificate), "{err:?}");

        // Another cluster's hash, or a master that does not accept joins: no handshake.
        let other = Pki::new();
        let sep =
            transport::server_endpoint_accepting_joins("127.0.0.1:0".parse().unwrap(), &master)
                .unwrap();
        let wrong = Identity::joining(ca_hash(&other), joiner());
        for (sep, joining) in [(sep, &wrong), (server(&master).0, &joining)] {
            let addr = sep.local_addr().unwrap();
            let _server = tokio::spawn(async move { accept_one(&sep).await.map(|_| ()) });
            let cep = transport::client_endpoint(joining).unwrap();
            let err = transport::connect(&cep, addr, Role::Master, None)
                .await
                .unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("did not present the CA certificate"),
                "{text}"
            );
        }
    })
    .await
}
