//! Hearing of a failover as soon as a new leader is elected ([`watch_leader`]).
//!
//! A client with a session at the leader also keeps a watch stream (`ClientFrame::WatchLeader`)
//! on every master, over the connections it already holds ([`crate::MasterLinks`]). Each master
//! says which master it believes leads and at which raft term, at once and at every change. When
//! one names another master than the session's, at a term later than any at which the session's
//! master was said to lead, the leader moved: [`LeaderWatch::moved`] resolves and the client
//! re-registers there at once (one stream on an open connection).
//!
//! This is what lets connections idle cheaply (`transport::CLIENT_IDLE_TIMEOUT`): a killed
//! leader sends nothing, but the election among the survivors takes about a second, and the
//! new leader and its followers tell every watching client. A master that does not know the
//! watch call (an older version) answers with an error and is not watched again.

use crate::{Backoff, ClientError, ClientOptions};
use proto::{ClientFrame, ServerFrame};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// The wait before watching a master again after its watch ended or it was not reachable;
/// doubling up to [`WATCH_RETRY_MAX`], jittered. Long, because this is not on the failover
/// path: the masters that are up are the ones that report a new leader.
const WATCH_RETRY_FIRST: Duration = Duration::from_secs(1);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(30);
/// Reports of a moved leader queued for the client; one is enough to act on.
const MOVED_QUEUE: usize = 4;

/// A master said the leader moved away from the session's master.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderMoved {
    /// The new leader's address, as clients dial it.
    pub leader: String,
    /// The raft term it leads in.
    pub term: u64,
    /// The master that said so.
    pub told_by: String,
}

impl std::fmt::Display for LeaderMoved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} leads now (term {}, said {})",
            self.leader, self.term, self.told_by
        )
    }
}

/// The watches of one session; dropping it ends them.
pub struct LeaderWatch {
    moved: mpsc::Receiver<LeaderMoved>,
    _watches: JoinSet<()>,
}

impl LeaderWatch {
    /// Resolves when a master says another master than the session's leads, at a later term
    /// than any at which the session's master was said to lead. Never resolves with a single
    /// master (nobody else to tell) or when no master can be watched.
    pub async fn moved(&mut self) -> LeaderMoved {
        match self.moved.recv().await {
            Some(m) => m,
            None => std::future::pending().await,
        }
    }
}

/// Watches every master in `opts.masters` (with one master: none) for a leader other than
/// `session_master`.
pub fn watch_leader(opts: &ClientOptions, session_master: &str) -> LeaderWatch {
    let (tx, moved) = mpsc::channel(MOVED_QUEUE);
    let mut watches = JoinSet::new();
    if opts.masters.len() > 1 {
        let judge = Arc::new(Mutex::new(Judge {
            session_master: session_master.to_owned(),
            session_term: 0,
        }));
        for addr in &opts.masters {
            let (opts, addr, tx, judge) = (opts.clone(), addr.clone(), tx.clone(), judge.clone());
            watches.spawn(async move { watch_master(&opts, &addr, &tx, &judge).await });
        }
    }
    LeaderWatch {
        moved,
        _watches: watches,
    }
}

/// Decides which reports mean the leader moved.
struct Judge {
    session_master: String,
    /// The latest term at which any master said the session's master leads.
    session_term: u64,
}

impl Judge {
    fn judge(&mut self, told_by: &str, leader: Option<String>, term: u64) -> Option<LeaderMoved> {
        let leader = leader?;
        if leader == self.session_master {
            self.session_term = self.session_term.max(term);
            return None;
        }
        // A report older than what we know of the session's master is stale news.
        (term > self.session_term).then(|| LeaderMoved {
            leader,
            term,
            told_by: told_by.to_owned(),
        })
    }
}

/// Why one watch on one master ended.
enum WatchEnded {
    /// The master does not know the call (or refused it): do not ask again.
    Refused(String),
    /// The stream or the connection ended, or the master was not reachable: ask again later.
    Lost(String),
}

async fn watch_master(
    opts: &ClientOptions,
    addr: &str,
    tx: &mpsc::Sender<LeaderMoved>,
    judge: &Mutex<Judge>,
) {
    let mut backoff = Backoff::new(WATCH_RETRY_FIRST, WATCH_RETRY_MAX);
    loop {
        match watch_once(opts, addr, tx, judge, &mut backoff).await {
            WatchEnded::Refused(why) => {
                tracing::debug!(master = %addr, %why, "master refused the leader watch");
                return;
            }
            WatchEnded::Lost(why) => {
                tracing::debug!(master = %addr, %why, "leader watch ended; watching again later");
            }
        }
        tokio::time::sleep(backoff.next_wait()).await;
    }
}

async fn watch_once(
    opts: &ClientOptions,
    addr: &str,
    tx: &mpsc::Sender<LeaderMoved>,
    judge: &Mutex<Judge>,
    backoff: &mut Backoff,
) -> WatchEnded {
    let lost = |e: ClientError| WatchEnded::Lost(e.to_string());
    let conn = match opts.links.connect(addr, &opts.identity).await {
        Ok(c) => c,
        Err(e) => return lost(e),
    };
    let (mut send, mut recv) =
        match transport::open_framed::<ClientFrame, ServerFrame>(&conn, opts.max_frame_len).await {
            Ok(s) => s,
            Err(e) => return lost(e.into()),
        };
    if let Err(e) = send.send(&ClientFrame::WatchLeader).await {
        return lost(e.into());
    }
    loop {
        match recv.recv().await {
            Ok(Some(ServerFrame::Leader { leader, term })) => {
                backoff.reset();
                let moved = judge
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .judge(addr, leader, term);
                if let Some(moved) = moved {
                    // Full: the client has not acted on the last report yet; one is enough.
                    let _ = tx.try_send(moved);
                }
            }
            Ok(Some(ServerFrame::Error(e))) => return WatchEnded::Refused(e.message),
            Ok(Some(_)) => {}
            Ok(None) => return WatchEnded::Lost("the master ended the watch".into()),
            Err(e) => return lost(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(session: &str) -> Judge {
        Judge {
            session_master: session.into(),
            session_term: 0,
        }
    }

    #[test]
    fn another_leader_at_a_later_term_is_a_move() {
        let mut j = judge("m1");
        assert_eq!(j.judge("m1", Some("m1".into()), 3), None);
        assert_eq!(j.judge("m2", Some("m1".into()), 3), None);
        assert_eq!(j.judge("m2", None, 4), None, "an election is not a move");
        let moved = j.judge("m3", Some("m2".into()), 4).unwrap();
        assert_eq!(
            moved,
            LeaderMoved {
                leader: "m2".into(),
                term: 4,
                told_by: "m3".into()
            }
        );
    }

    #[test]
    fn stale_news_of_an_older_leader_is_not_a_move() {
        let mut j = judge("m2");
        assert_eq!(j.judge("m2", Some("m2".into()), 5), None);
        // A follower that has not heard of the election yet still names the old leader.
        assert_eq!(j.judge("m3", Some("m1".into()), 4), None);
        assert_eq!(j.judge("m3", Some("m1".into()), 5), None);
        assert!(j.judge("m3", Some("m3".into()), 6).is_some());
    }
}
