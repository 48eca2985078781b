//! Following the operator event stream (`corral events`, `corral ui`): [`EventStream`]
//! subscribes at the leading master and, when that master goes away or stops leading, resumes
//! at the next leader after the last event the caller acknowledged. Event cursors are log
//! positions that mean the same event at every master, so an acknowledged event is never
//! handed out again and none after it is skipped; events handed out but not acknowledged are
//! handed out again after a resumption.

use proto::{
    ClientFrame, ErrorCode, EventCursor, EventsSubscribed, OperatorCall, OperatorReply,
    ServerFrame, StampedEvent,
};
use session::{open_session, watch_leader, ClientError, ClientOptions, LeaderWatch, Session};
use std::collections::VecDeque;
use std::time::Duration;

/// What the stream hands out.
#[derive(Debug)]
pub enum StreamItem {
    /// A (new) starting point: the cluster as of `cursor`, as `*Added` events. The first item
    /// of a stream that was given no cursor, and after a resumption the master could not serve
    /// (`note` says why); a client rebuilds its view from it.
    Subscribed(Box<EventsSubscribed>),
    /// The stream continues at another master after the last acknowledged event.
    Resumed {
        master: String,
        after: EventCursor,
    },
    Event(Box<StampedEvent>),
}

#[derive(Debug, thiserror::Error)]
pub enum EventStreamError {
    /// No leader could be reached in time to subscribe or resume.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// The master cut this client off for reading too slowly.
    #[error("the master ended the event stream: {0}")]
    TooSlow(String),
}

/// A resumable subscription to the cluster's events.
pub struct EventStream {
    opts: ClientOptions,
    /// The subscription, and the other masters' word on who leads (a killed leader says
    /// nothing: the stream moves when the others elect a new one, not after an idle timeout).
    session: Option<(Session, LeaderWatch)>,
    /// Resume after this (the last acknowledged event, or the subscription's start).
    acknowledged: Option<EventCursor>,
    /// Received, not yet handed out.
    pending: VecDeque<StampedEvent>,
    /// How long to keep looking for a leader after losing one.
    pub failover_timeout: Duration,
}

impl EventStream {
    /// A stream that starts from the current state (`after: None`) or after `after`.
    pub fn new(opts: ClientOptions, after: Option<EventCursor>) -> EventStream {
        EventStream {
            opts,
            session: None,
            acknowledged: after,
            pending: VecDeque::new(),
            failover_timeout: Duration::from_secs(60),
        }
    }

    /// The event at `cursor` (and every one before it) was processed: a resumption continues
    /// after it.
    pub fn acknowledge(&mut self, cursor: EventCursor) {
        self.acknowledged = Some(self.acknowledged.map_or(cursor, |c| c.max(cursor)));
    }

    /// The last acknowledged cursor (or where the subscription started).
    pub fn acknowledged(&self) -> Option<EventCursor> {
        self.acknowledged
    }

    /// The next item, subscribing or resuming as needed.
    pub async fn next(&mut self) -> Result<StreamItem, EventStreamError> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(StreamItem::Event(Box::new(e)));
            }
            let Some((session, leader_watch)) = self.session.as_mut() else {
                return self.subscribe().await;
            };
            let received = tokio::select! {
                r = session.recv.recv() => r,
                moved = leader_watch.moved() => {
                    let master = session.master.clone();
                    tracing::info!(%master, %moved, "the event stream's master does not lead any more; resuming at the leader");
                    self.close();
                    self.opts.try_last(&master);
                    self.opts.prefer(&moved.leader);
                    continue;
                }
            };
            let lost = match received {
                Ok(Some(ServerFrame::Operator(OperatorReply::Events(batch)))) => {
                    self.pending.extend(batch);
                    continue;
                }
                Ok(Some(ServerFrame::Error(e))) if e.code == ErrorCode::TooSlow => {
                    self.close();
                    return Err(EventStreamError::TooSlow(e.message));
                }
                Ok(Some(ServerFrame::NotLeader { .. })) => "it does not lead any more".to_owned(),
                Ok(Some(other)) => format!("unexpected frame {other:?}"),
                Ok(None) => "it ended the stream".to_owned(),
                Err(e) => e.to_string(),
            };
            let master = session.master.clone();
            tracing::info!(%master, reason = %lost, "lost the event stream's master; resuming at the leader");
            self.close();
            self.opts.try_last(&master);
            self.opts.preferred = None;
        }
    }

    /// Ends the stream (dropping its halves finishes it) and not the connection, which is
    /// shared with the client's other sessions (`session::MasterLinks`).
    fn close(&mut self) {
        self.session = None;
        self.pending.clear();
    }

    async fn subscribe(&mut self) -> Result<StreamItem, EventStreamError> {
        let resuming = self.acknowledged;
        let mut opts = self.opts.clone();
        if resuming.is_some() {
            opts.connect_timeout = self.failover_timeout;
        }
        let first = ClientFrame::Operator(OperatorCall::SubscribeEvents { after: resuming });
        let (session, reply) = open_session(&opts, &first).await?;
        let ServerFrame::Operator(OperatorReply::EventsSubscribed(subscribed)) = reply else {
            session.finish().await;
            return Err(ClientError::Unexpected(format!("{reply:?}")).into());
        };
        let master = session.master.clone();
        let leader_watch = watch_leader(&opts, &master);
        self.session = Some((session, leader_watch));
        match resuming {
            Some(after) if subscribed.resumed => Ok(StreamItem::Resumed { master, after }),
            _ => {
                self.acknowledged = Some(subscribed.cursor);
                Ok(StreamItem::Subscribed(subscribed))
            }
        }
    }
}
