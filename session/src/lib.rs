//! Client sessions with Corral's masters, shared by every client: the framework library
//! (`framework::Scheduler`, operator calls, reading task output) and the agent.
//!
//! A client knows a list of master addresses, not which one leads. [`open_session`] dials
//! every master at once and sends each the first request; followers answer `NotLeader` with a
//! hint that is dialled at once; the first other answer wins and the other attempts are
//! dropped. A master that could not be reached or does not lead is retried on its own
//! jittered [`Backoff`] over the connection it already has, until the caller's
//! `connect_timeout`. Re-subscribing after a lost master is [`reopen`]: the same call with
//! the same first request (a framework's `Subscribe` with its id, an agent's `Register` with
//! its tasks), the lost master listed last, and for a fleet after a [`Backoff`] wait.
//!
//! Everything runs over `transport`'s mutually authenticated QUIC; the caller supplies its
//! certificate identity in [`ClientOptions`]. No quinn or rustls type appears here.
//!
//! `certificates.rs`: a node without a certificate joins with a token ([`join`]: its own key,
//! the CA pinned by the token's hash), and a node renews its certificate before it expires
//! ([`renew`], [`keep_renewed`]) without dropping its open connections.

mod backoff;
mod certificates;
mod connect;
mod links;
mod watch;

pub use backoff::Backoff;
pub use certificates::{join, keep_renewed, renew, renew_at, CertificateError};
pub use connect::{
    open_session, reopen, ClientError, ClientOptions, Session, CONNECT_ATTEMPT_TIMEOUT,
    FIRST_REPLY_TIMEOUT, PREFERRED_GRACE,
};
pub use links::MasterLinks;
pub use watch::{watch_leader, LeaderMoved, LeaderWatch};
