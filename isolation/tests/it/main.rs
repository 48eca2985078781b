//! Integration tests of the isolation crate against the real kernel: real cgroups (v1 on hybrid
//! hosts, v2 on unified hosts and in the VM), real namespaces, real processes. They need root and
//! a cgroup filesystem; otherwise each test prints why it skips.
//!
//! Every scenario uses only the `isolation-test-init` binary as the task program, so the same test
//! binary runs in a busybox VM with cgroup2 at /sys/fs/cgroup (set `ISOLATION_TEST_INIT` to the
//! helper's path there; /etc/passwd must list `nobody`).

mod env;
mod scenarios;
mod vm;
