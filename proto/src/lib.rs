//! Corral's wire protocol. This crate owns every message exchanged between masters, agents,
//! frameworks and operators ([`messages`], the operator calls and cluster state in [`operator`]),
//! the resource model they carry ([`resources`]), and the
//! length-delimited frame codec ([`codec`]). It does no I/O: the transport crate moves the bytes.
//!
//! Encoding: MessagePack with named struct fields (rmp-serde). Named fields make messages
//! forward-compatible: a peer one minor version older skips fields it does not know, and new
//! fields are `Option` or `#[serde(default)]` so that an older peer's messages still decode.
//! The major version is carried in the QUIC ALPN name ([`ALPN`]), so peers of different major
//! versions fail the handshake with a clear error instead of misreading each other.
//!
//! Why MessagePack with named fields: encoding is a few hundred ns per message, an order of
//! magnitude cheaper than JSON in bytes and CPU for thousands of agents, and unlike bincode or
//! postcard, which are positional, named fields let peers a minor version apart skip or default
//! fields (`tests.rs::older_peer_reads_messages_with_new_optional_fields`). The rule: within a
//! major, add only `Option`/`#[serde(default)]` fields; never rename or reorder variants. Peers of
//! different majors fail the TLS handshake with "does not speak corral/1".

pub mod codec;
pub mod events;
pub mod ids;
pub mod messages;
pub mod operator;
pub mod policy;
pub mod quota;
pub mod resources;
pub mod role;

pub use codec::{decode, encode, DecodeError, EncodeError, FRAME_HEADER_LEN, MAX_FRAME_LEN};
pub use events::{
    ClusterEvent, CursorParseError, EventAgent, EventCursor, EventFramework, EventsSubscribed,
    StampedEvent,
};
pub use ids::*;
pub use messages::*;
pub use policy::{AccessRule, PolicyView};
pub use quota::{format_reserved, parse_reserved_resources, Quota, ResourceLimit};
pub use resources::{
    format_size, parse_cpus, parse_size, PortRange, ResourceParseError, Resources,
};
pub use role::{PeerIdentity, Role, UnknownRole};

/// Major protocol version. Changing it is a breaking change: peers refuse each other in the TLS
/// handshake because the ALPN names differ.
pub const PROTOCOL_MAJOR: u16 = 1;
/// Minor protocol version. Bumped when optional fields or messages are added; peers of any
/// minor version within one major interoperate.
pub const PROTOCOL_MINOR: u16 = 0;
/// The ALPN protocol name for this major version.
pub const ALPN: &[u8] = b"corral/1";

/// The protocol version a peer speaks, sent in registration and subscription messages so that
/// the master can log and show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProtocolVersion {
    pub major: u16,
    pub minor: u16,
}

impl ProtocolVersion {
    pub const CURRENT: ProtocolVersion = ProtocolVersion {
        major: PROTOCOL_MAJOR,
        minor: PROTOCOL_MINOR,
    };
}

impl Default for ProtocolVersion {
    fn default() -> Self {
        Self::CURRENT
    }
}

impl std::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests;
