//! Integration tests of the master core, driven through the `Sim` harness on a virtual clock.

mod basic;
mod drf;
mod events;
mod failover;
mod lifecycle;
mod liveness;
mod offers;
mod policy;
mod prop;
mod proposals;
mod quota_ops;
mod quota_prop;
mod scenarios;

use master_core::testing::Sim;
use master_core::MasterConfig;
use std::time::Instant;

pub fn sim() -> Sim {
    sim_with(MasterConfig::default())
}

pub fn sim_with(config: MasterConfig) -> Sim {
    // The only clock read: the base of the virtual clock.
    Sim::new(config, Instant::now())
}
