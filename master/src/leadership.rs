//! Leadership as the stream tasks see it without asking the core loop (`Leadership`), and the
//! leader watches clients keep on every master (`serve_leader_watch`): when a new leader is
//! elected, every master tells its watchers at once, so a failover reaches agents and frameworks
//! when the election ends rather than after a connection's idle timeout.

use proto::{ClientFrame, ServerFrame};
use std::sync::atomic::AtomicBool;
use std::sync::RwLock;
use tokio::sync::watch;
use transport::{FramedRecv, FramedSend};

/// What stream tasks need to know about leadership without asking the core loop.
pub(crate) struct Leadership {
    pub(crate) is_leader: AtomicBool,
    /// The leader's address, when known.
    pub(crate) leader: RwLock<Option<String>>,
    /// What leader-watch streams tell clients (see [`serve_leader_watch`]).
    pub(crate) news: watch::Sender<LeaderNews>,
}

/// Which master leads as this one sees it, for clients watching: the leader's client address
/// (this master's own only once it serves as the leader) and the raft term.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LeaderNews {
    leader: Option<String>,
    term: u64,
}

impl Default for Leadership {
    fn default() -> Self {
        Leadership {
            is_leader: AtomicBool::new(false),
            leader: RwLock::new(None),
            news: watch::Sender::new(LeaderNews::default()),
        }
    }
}

impl Leadership {
    pub(crate) fn leader(&self) -> Option<String> {
        self.leader.read().ok().and_then(|l| l.clone())
    }

    /// Tells the watching clients when the leader (or the term) changed. A master raft made
    /// leader says so only once it serves: until then it names no leader, so no client comes
    /// to be told "not the leader".
    pub(crate) fn publish(
        &self,
        leader: Option<String>,
        leads_by_raft: bool,
        serving: bool,
        term: u64,
    ) {
        let leader = if leads_by_raft && !serving {
            None
        } else {
            leader
        };
        let news = LeaderNews { leader, term };
        self.news.send_if_modified(|current| {
            let changed = *current != news;
            if changed {
                *current = news;
            }
            changed
        });
    }
}

/// A client's leader watch: which master leads, at once and at every change, until the client
/// ends the stream (or sends anything on it). An idle watch is a parked task and an open stream:
/// it costs the master nothing until the leader changes, then one small frame per client.
pub(crate) async fn serve_leader_watch(
    mut tx: FramedSend<ServerFrame>,
    mut rx: FramedRecv<ClientFrame>,
    mut news: watch::Receiver<LeaderNews>,
) {
    loop {
        let frame = {
            let n = news.borrow_and_update();
            ServerFrame::Leader {
                leader: n.leader.clone(),
                term: n.term,
            }
        };
        if tx.send(&frame).await.is_err() {
            return;
        }
        tokio::select! {
            changed = news.changed() => if changed.is_err() { break },
            _ = rx.recv() => break,
        }
    }
    let _ = tx.finish().await;
}
