//! A framework that launches tasks: a real `framework` library session (its own certificate,
//! QUIC + mTLS) driven by a [`LaunchBook`]. How it wants launches is its [`Pace`]: at a steady
//! rate, one at a time (a probe), or on every offer it gets ([`Demand::PerOffer`]). Every
//! status update is acknowledged. It runs as a tokio task until stopped; its counters can be
//! read meanwhile, its latencies at the end.

use crate::launch_book::{Demand, LaunchBook, LaunchCounts, Pacer, TaskShape};
use crate::LoadgenError;
use framework::{framework_info, ClientOptions, Scheduler, SchedulerEvent};
use proto::{Filters, FrameworkCall, FrameworkEvent, OfferOperation};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Offer ids in one decline (the master takes up to 1,000).
const MAX_OFFERS_PER_CALL: usize = 1_000;
/// How long [`Launcher::stop`] waits for the driver.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a subscription may take, at least.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a paced launcher looks at its pacer.
const PACE_TICK: Duration = Duration::from_millis(5);

/// When the framework wants a launch.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// Wants `Demand::PerOffer` launches whenever offers come; nothing submitted.
    Offers,
    /// This many launches per second, each wanted at its scheduled moment.
    Rate(f64),
    /// One launch at a time: the next is wanted `gap` after the previous one ran.
    OneAtATime { gap: Duration },
}

#[derive(Clone, Debug)]
pub struct LauncherConfig {
    /// Framework name and task id prefix.
    pub name: String,
    pub shape: TaskShape,
    pub demand: Demand,
    pub pace: Pace,
    /// Offers declined (fitting nothing) are refused for this long.
    pub decline_for: Duration,
}

/// A running launcher.
pub struct Launcher {
    counts: Arc<Mutex<LaunchCounts>>,
    go: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<LaunchBook, LoadgenError>>,
}

impl Launcher {
    /// Subscribes; launching starts at [`Launcher::go`].
    pub async fn subscribe(
        mut opts: ClientOptions,
        cfg: LauncherConfig,
    ) -> Result<Launcher, LoadgenError> {
        // A master busy with thousands of agents and launches may take seconds to answer.
        opts.connect_timeout = opts.connect_timeout.max(SUBSCRIBE_TIMEOUT);
        let scheduler = Scheduler::subscribe(opts, framework_info(&cfg.name))
            .await
            .map_err(|e| LoadgenError::Master(format!("framework {}: {e}", cfg.name)))?;
        let counts = Arc::new(Mutex::new(LaunchCounts::default()));
        let (go, go_rx) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let driver = Driver {
            book: LaunchBook::new(&cfg.name, cfg.shape.clone(), cfg.demand),
            scheduler,
            counts: counts.clone(),
            cfg,
            suppressed: false,
        };
        let task = tokio::spawn(driver.run(go_rx, stop_rx));
        Ok(Launcher {
            counts,
            go,
            stop,
            task,
        })
    }

    /// Starts (or resumes) launching.
    pub fn go(&self) {
        let _ = self.go.send(true);
    }

    /// Stops wanting new launches; those under way go on.
    pub fn pause(&self) {
        let _ = self.go.send(false);
    }

    /// What became of the launches so far.
    pub fn counts(&self) -> LaunchCounts {
        *self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until no launch is wanted or under way.
    pub async fn drain(&self, timeout: Duration) -> Result<(), LoadgenError> {
        self.wait_for(timeout, "no launch wanted or under way", |c| {
            c.outstanding == 0
        })
        .await
    }

    /// Waits until the counts satisfy `done` (`what` says how), polling every 50 ms.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&LaunchCounts) -> bool,
    ) -> Result<(), LoadgenError> {
        let deadline = Instant::now() + timeout;
        loop {
            let counts = self.counts();
            if done(&counts) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LoadgenError::Master(format!(
                    "not {what} within {timeout:?}: {counts:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops launching and returns the book (its latencies and counts).
    /// Stops launching and returns the book (its latencies and counts). A driver stuck in a
    /// call (the library's queue full while it re-subscribes) is aborted after
    /// [`STOP_TIMEOUT`].
    pub async fn stop(mut self) -> Result<LaunchBook, LoadgenError> {
        let _ = self.stop.send(true);
        match tokio::time::timeout(STOP_TIMEOUT, &mut self.task).await {
            Ok(joined) => {
                joined.map_err(|e| LoadgenError::Master(format!("a launcher task failed: {e}")))?
            }
            Err(_) => {
                self.task.abort();
                Err(LoadgenError::Master(format!(
                    "a launcher did not stop within {STOP_TIMEOUT:?} (a call waited for the framework session)"
                )))
            }
        }
    }
}

struct Driver {
    book: LaunchBook,
    scheduler: Scheduler,
    counts: Arc<Mutex<LaunchCounts>>,
    cfg: LauncherConfig,
    /// A framework that does not hold offers suppresses them while it wants nothing (as
    /// Mesos advises), so the master does not offer it every agent of the cluster between
    /// two launches; it revives when it wants one.
    suppressed: bool,
}

impl Driver {
    async fn run(
        mut self,
        mut go: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<LaunchBook, LoadgenError> {
        let mut tick = tokio::time::interval(PACE_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pacer: Option<Pacer> = None;
        let mut next_probe: Option<Instant> = None;
        loop {
            let going = *go.borrow();
            tokio::select! {
                _ = crate::sim::stopped(&mut stop) => break,
                changed = go.changed() => if changed.is_err() { break },
                event = self.scheduler.next_event() => self.on_event(event).await?,
                _ = tick.tick(), if going => {
                    let now = Instant::now();
                    if self.pace(now, &mut pacer, &mut next_probe) && !self.holds_offers() {
                        // Offers were declined and suppressed while nothing was wanted: ask
                        // for them again.
                        let revive = FrameworkCall::Revive { roles: Vec::new() };
                        self.scheduler.call(revive).await.map_err(|e| self.failed(e))?;
                        self.suppressed = false;
                    }
                }
            }
            // Offers are held, not used, until the launcher is told to go.
            if *go.borrow() {
                self.step().await?;
            }
            // Paused or not: a launch that reaches RUNNING after a pause must show (the
            // counts were published by `step` alone, so `drain` waited on stale ones).
            self.publish_counts();
        }
        Ok(self.book)
    }

    fn holds_offers(&self) -> bool {
        !matches!(self.cfg.demand, Demand::Submitted { hold_offers: false })
    }

    /// Submits the launches due now; says whether it submitted any.
    fn pace(
        &mut self,
        now: Instant,
        pacer: &mut Option<Pacer>,
        next_probe: &mut Option<Instant>,
    ) -> bool {
        match self.cfg.pace {
            Pace::Offers => false,
            Pace::Rate(rate) => {
                let due = pacer.get_or_insert_with(|| Pacer::new(now, rate)).due(now);
                let any = !due.is_empty();
                for at in due {
                    self.book.submit(at);
                }
                any
            }
            Pace::OneAtATime { gap } => {
                if self.book.outstanding() > 0 {
                    *next_probe = None;
                    return false;
                }
                let at = *next_probe.get_or_insert(now + gap);
                if at <= now {
                    self.book.submit(now);
                    *next_probe = None;
                    return true;
                }
                false
            }
        }
    }

    async fn on_event(&mut self, event: Option<SchedulerEvent>) -> Result<(), LoadgenError> {
        let now = Instant::now();
        match event {
            None | Some(SchedulerEvent::Terminated { .. }) => {
                return Err(LoadgenError::Master(format!(
                    "framework {}: the session ended",
                    self.cfg.name
                )))
            }
            Some(SchedulerEvent::Framework(FrameworkEvent::Offers { offers })) => {
                self.book.on_offers(offers, now)
            }
            Some(SchedulerEvent::Framework(FrameworkEvent::Rescind { offer_id })) => {
                self.book.on_rescind(&offer_id)
            }
            Some(SchedulerEvent::Framework(FrameworkEvent::Update { status })) => {
                self.book.on_status(&status, now);
                self.scheduler
                    .acknowledge(&status)
                    .await
                    .map_err(|e| self.failed(e))?;
            }
            Some(SchedulerEvent::Disconnected { .. }) => {
                self.book.on_disconnected();
                self.book.counts.disconnects += 1;
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Sends the accepts and declines the book plans now; publishes the counts.
    async fn step(&mut self) -> Result<(), LoadgenError> {
        let plan = self.book.plan(Instant::now());
        for (offer_id, tasks) in plan.accepts {
            let call = FrameworkCall::Accept {
                offer_ids: vec![offer_id],
                operations: vec![OfferOperation::Launch { tasks }],
                // What the tasks leave of the offer comes back at the next allocation.
                filters: Some(Filters {
                    refuse_seconds: Some(0.0),
                }),
            };
            self.scheduler
                .call(call)
                .await
                .map_err(|e| self.failed(e))?;
        }
        if !self.holds_offers() && !self.suppressed && !self.book.wants_offers() {
            let call = FrameworkCall::Suppress { roles: Vec::new() };
            self.scheduler
                .call(call)
                .await
                .map_err(|e| self.failed(e))?;
            self.suppressed = true;
        }
        for chunk in plan.declines.chunks(MAX_OFFERS_PER_CALL) {
            let call = FrameworkCall::Decline {
                offer_ids: chunk.to_vec(),
                filters: Some(Filters {
                    refuse_seconds: Some(self.cfg.decline_for.as_secs_f64()),
                }),
            };
            self.scheduler
                .call(call)
                .await
                .map_err(|e| self.failed(e))?;
        }
        Ok(())
    }

    /// Makes the book's counts visible to [`Launcher::counts`].
    fn publish_counts(&self) {
        let mut counts = self.book.counts;
        counts.outstanding = self.book.outstanding() as u64;
        *self.counts.lock().unwrap_or_else(|p| p.into_inner()) = counts;
    }

    fn failed(&self, e: framework::ClientError) -> LoadgenError {
        LoadgenError::Master(format!("framework {}: a call failed: {e}", self.cfg.name))
    }
}
