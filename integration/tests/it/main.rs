//! Multi-process tests: real `corral` processes on loopback.

mod agent_input;
mod agent_recovery;
mod agent_stop;
mod disk;
mod events;
mod executors;
mod foundation;
mod ha;
mod limits;
mod loadgen;
mod mesos_gateway;
mod metrics;
mod offers;
mod operator;
mod policy;
mod post_mortem;
mod security;
mod soak;
mod status_updates;
mod systemd;
mod systemd_vm;
mod tenancy;
mod tidy;
mod ui;
