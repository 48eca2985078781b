//! The QUIC connections a client keeps to the masters ([`MasterLinks`]): one per master
//! address, shared by its sessions, their retries and its leader watches, so that moving to a
//! new leader after a failover is a new stream on a connection that is already open, not a
//! handshake (10,000 agents re-registering at once would otherwise cost the new leader 10,000
//! TLS handshakes in the second that matters).

use crate::connect::{ClientError, CONNECT_ATTEMPT_TIMEOUT};
use proto::Role;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use transport::{ClientEndpoints, Connection, Identity, TransportError};

/// One open connection per master address. Clones share the connections (a client's
/// `ClientOptions` carry one, so every session made from them shares it). A connection stays
/// open while a handle lives and the master answers its keep-alives; a closed one is dialled
/// again on next use. Bounded: one entry per address ever dialled, and a client dials the
/// masters it was given and the leaders they name. The connections leave from one client
/// endpoint (UDP socket) per address family, shared with whoever the endpoints were given to
/// ([`MasterLinks::sharing`]).
#[derive(Clone, Default)]
pub struct MasterLinks {
    open: Arc<Mutex<HashMap<String, Connection>>>,
    endpoints: ClientEndpoints,
}

impl std::fmt::Debug for MasterLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let open: Vec<String> = self.lock().keys().cloned().collect();
        f.debug_struct("MasterLinks").field("open", &open).finish()
    }
}

impl MasterLinks {
    /// Links whose connections leave from `endpoints`, which other links may share (the load
    /// generator's simulated agents share a few sockets among thousands).
    pub fn sharing(endpoints: ClientEndpoints) -> MasterLinks {
        MasterLinks {
            open: Arc::default(),
            endpoints,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Connection>> {
        // A panic while holding the lock leaves only a map of connections: still usable.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The open connection to `addr`, if there is one.
    pub fn get(&self, addr: &str) -> Option<Connection> {
        let mut open = self.lock();
        match open.get(addr) {
            Some(c) if !c.is_closed() => Some(c.clone()),
            Some(_) => {
                open.remove(addr);
                None
            }
            None => None,
        }
    }

    /// The open connection to `addr`, dialled now if there is none (one handshake, bounded by
    /// [`CONNECT_ATTEMPT_TIMEOUT`]); the master's certificate must carry the master role.
    pub async fn connect(
        &self,
        addr: &str,
        identity: &Identity,
    ) -> Result<Connection, ClientError> {
        if let Some(c) = self.get(addr) {
            return Ok(c);
        }
        let sock = transport::resolve(addr).await?;
        let endpoint = self.endpoints.for_target(sock)?;
        let conn = tokio::time::timeout(
            CONNECT_ATTEMPT_TIMEOUT,
            transport::connect_as(&endpoint, identity, sock, Role::Master, None),
        )
        .await
        .map_err(|_| ClientError::Transport(TransportError::TimedOut { addr: sock }))??;
        let mut open = self.lock();
        // Another task may have dialled the same master meanwhile: keep one, use it.
        match open.get(addr) {
            Some(kept) if !kept.is_closed() => Ok(kept.clone()),
            _ => {
                open.insert(addr.to_owned(), conn.clone());
                Ok(conn)
            }
        }
    }

    /// Forgets `conn` as the connection to `addr` (it failed); the next use dials again.
    pub fn forget(&self, addr: &str, conn: &Connection) {
        let mut open = self.lock();
        if open.get(addr).is_some_and(|c| c.same_as(conn)) {
            open.remove(addr);
        }
    }

    /// Closes every connection (a client shutting down says goodbye rather than letting the
    /// masters wait for an idle timeout).
    pub fn close_all(&self, code: u32, reason: &[u8]) {
        for (_, c) in self.lock().drain() {
            c.close(code, reason);
        }
    }
}
