//! The client library that frameworks (schedulers) and operator tools use to talk to Corral
//! masters: the framework session (subscribe, calls, events, re-subscribing with the same
//! framework id after a lost connection), one-shot operator calls, reading task output and
//! following the operator event stream across master failovers ([`EventStream`]).
//! Finding the leading master (dialling every address, following `NotLeader` redirects) is the
//! `session` crate's, re-exported here ([`open_session`], [`ClientOptions`]). Everything runs over the
//! mutually-authenticated QUIC transport; the caller supplies its certificate identity. It also
//! holds the small blocking library custom executors use to talk to their agent ([`executor`]),
//! and [`oneshot`], a scheduler that runs one task to its end (what `corral run` is).
//!
//! ```no_run
//! # async fn demo(opts: framework::ClientOptions) -> Result<(), framework::ClientError> {
//! use framework::{Scheduler, SchedulerEvent};
//! let info = framework::framework_info("my-framework");
//! let mut sched = Scheduler::subscribe(opts, info).await?;
//! while let Some(event) = sched.next_event().await {
//!     match event {
//!         SchedulerEvent::Framework(proto::FrameworkEvent::Offers { offers }) => {
//!             let ids = offers.iter().map(|o| o.id.clone()).collect();
//!             sched.call(proto::FrameworkCall::Decline { offer_ids: ids, filters: None }).await?;
//!         }
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```

mod events;
pub mod executor;
pub mod oneshot;
mod operator;
mod scheduler;

pub use events::{EventStream, EventStreamError, StreamItem};
pub use executor::{Executor, ExecutorError, ExecutorEvent};
pub use operator::{operator_call, read_log, read_output, stream_name, OutputError, ReadRetry};
pub use scheduler::{framework_info, Scheduler, SchedulerEvent};
pub use session::{
    open_session, reopen, Backoff, ClientError, ClientOptions, Session, CONNECT_ATTEMPT_TIMEOUT,
    FIRST_REPLY_TIMEOUT,
};
