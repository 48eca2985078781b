//! Integration tests of master-raft: openraft's storage suite on the on-disk store, and
//! clusters of three masters in one process talking real QUIC with real certificates on
//! 127.0.0.1.

mod cluster;
mod network;
mod suite;
mod support;
