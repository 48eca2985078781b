//! Multi-process tests: real `corral` processes on loopback.

mod foundation;
mod security;
