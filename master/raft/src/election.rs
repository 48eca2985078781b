//! When a master stands for election: a pre-vote (Raft thesis §9.6) before openraft's vote.
//!
//! openraft 0.9 has no pre-vote: a follower cut off from the others keeps timing out and raising
//! its term, and when its link comes back its higher term makes the healthy leader step down. So
//! openraft's own election timer is off on every master (`enable_elect = false`) and [`drive`]
//! decides instead:
//!
//! - A master that has heard no leader for its stand timeout (a random time in the election
//!   timeout range, after openraft's leader lease, the election timeout maximum, if it knew a
//!   leader: what openraft's own timer waits, and what the voters' lease lets through), asks
//!   every other voter over the raft links ([`PreVoteRequest`]) "would you vote for me?".
//! - A peer says yes ([`answer_pre_vote`]) only if it is not the leader, has heard no leader
//!   within the minimum election timeout, and the asker's last log id is at least its own.
//! - With a majority of yes (itself included, [`won`]) it calls `raft.trigger().elect()`; either
//!   way it waits a fresh stand timeout before it asks again.
//!
//! "Heard a leader" is exact: [`Contact`] records when the raft server accepted a leader's
//! append-entries or snapshot (one answered "higher vote" comes from a stale leader and does not
//! count), and when it granted a vote (a candidate is under way: give it time). A cut-off master
//! gets no majority of yes, so its term stays; a restarted one is refused while the others hear
//! the leader. The decisions are pure functions of their inputs (times are passed in);
//! [`drive`] feeds them from the clock, openraft's metrics and the network.

use crate::network::Network;
use crate::{LogId, NodeId, Raft};
use openraft::ServerState;
use serde::{Deserialize, Serialize};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// "Would you vote for me?" — sent to every other voter before standing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteRequest {
    pub candidate: NodeId,
    /// The term the candidate would stand in (its current term + 1); for the logs.
    pub term: u64,
    pub last_log_id: Option<LogId>,
}

/// The answer to a [`PreVoteRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreVoteResponse {
    pub granted: bool,
}

/// What the raft server has heard, shared with [`drive`].
#[derive(Debug, Default)]
pub struct Contact {
    state: Mutex<Heard>,
}

#[derive(Debug, Default)]
struct Heard {
    leader: Option<Instant>,
    vote_granted: Option<Instant>,
}

impl Contact {
    /// A leader's append-entries or snapshot was accepted at `now`.
    pub fn leader_heard(&self, now: Instant) {
        let first = {
            let mut h = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let first = h.leader.is_none();
            h.leader = Some(now);
            first
        };
        if first {
            tracing::info!("heard the leader");
        }
    }

    /// This master granted a candidate its vote at `now`.
    pub fn vote_granted(&self, now: Instant) {
        let mut h = self.state.lock().unwrap_or_else(|e| e.into_inner());
        h.vote_granted = Some(now);
    }

    /// When a leader was last heard.
    pub fn last_leader(&self) -> Option<Instant> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).leader
    }

    /// The latest of the leader's contact and a granted vote.
    fn last_activity(&self) -> Option<Instant> {
        let h = self.state.lock().unwrap_or_else(|e| e.into_inner());
        h.leader.max(h.vote_granted)
    }
}

/// The election timers (from `RaftConfig`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub election_min: Duration,
    pub election_max: Duration,
}

impl Timing {
    /// How long to hear nothing before standing: a time in `[election_min, election_max)`
    /// picked by `random`, plus the leader lease (openraft's: the election timeout maximum;
    /// voters refuse a vote within it of their leader's last contact) when this master's vote
    /// is committed (it knew a leader). After a candidacy of its own that won nothing, its
    /// vote is not committed and there is no lease to wait for (as openraft's own timer does).
    pub fn stand_timeout(&self, random: u64, vote_committed: bool) -> Duration {
        let span = self
            .election_max
            .saturating_sub(self.election_min)
            .as_nanos() as u64;
        let extra = if span == 0 { 0 } else { random % span };
        let lease = if vote_committed {
            self.election_max
        } else {
            Duration::ZERO
        };
        lease + self.election_min + Duration::from_nanos(extra)
    }
}

/// Whether this master should ask for pre-votes now: it is a voter, not the leader, and nothing
/// (a leader's contact, a vote it granted, its own last attempt or its start) happened within
/// `timeout` before `now`.
pub fn should_stand(
    now: Instant,
    quiet_since: Instant,
    timeout: Duration,
    is_voter: bool,
    is_leader: bool,
) -> bool {
    is_voter && !is_leader && now.saturating_duration_since(quiet_since) >= timeout
}

/// Whether to grant a pre-vote: this master is not the leader, has heard no leader within the
/// minimum election timeout, and the candidate's log is at least as up to date as its own.
pub fn answer_pre_vote(
    now: Instant,
    last_leader: Option<Instant>,
    min_timeout: Duration,
    is_leader: bool,
    mine: Option<LogId>,
    candidate: Option<LogId>,
) -> bool {
    let heard = last_leader.is_some_and(|t| now.saturating_duration_since(t) < min_timeout);
    !is_leader && !heard && candidate >= mine
}

/// Whether `yes` grants from the other voters, plus the candidate's own, are a majority of
/// `voters`.
pub fn won(yes: usize, voters: usize) -> bool {
    (yes + 1) * 2 > voters
}

/// Answers a pre-vote from the local raft's state and what `contact` heard.
pub fn answer(raft: &Raft, contact: &Contact, timing: &Timing, req: &PreVoteRequest) -> bool {
    let is_leader = raft.metrics().borrow().state == ServerState::Leader;
    let mine = raft.data_metrics().borrow().last_log;
    let granted = answer_pre_vote(
        Instant::now(),
        contact.last_leader(),
        timing.election_min,
        is_leader,
        mine,
        req.last_log_id,
    );
    tracing::debug!(
        candidate = req.candidate,
        term = req.term,
        granted,
        "answered a pre-vote"
    );
    if granted {
        // A candidate is about to stand: give it time, as after a granted vote. Two followers
        // of a dead leader would otherwise stand within milliseconds of each other and split
        // the vote (each votes for itself), and every round lost costs an election timeout.
        contact.vote_granted(Instant::now());
    }
    granted
}

/// A random number (no RNG crate: the standard library's randomly keyed hasher).
fn random(counter: u64) -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(counter);
    h.finish()
}

/// How often the driver looks at least (for a change of role); it wakes at its deadline too.
const LOOK_EVERY: Duration = Duration::from_millis(50);

/// What the driver reads of the local raft.
struct Local {
    is_leader: bool,
    is_voter: bool,
    /// The other voters.
    voters: Vec<(NodeId, crate::MasterNode)>,
    term: u64,
    vote_committed: bool,
}

fn local(raft: &Raft, me: NodeId) -> Local {
    let m = raft.metrics();
    let m = m.borrow();
    let membership = m.membership_config.membership();
    Local {
        is_leader: m.state == ServerState::Leader,
        is_voter: membership.voter_ids().any(|id| id == me),
        voters: membership
            .voter_ids()
            .filter(|id| *id != me)
            .filter_map(|id| membership.get_node(&id).map(|n| (id, n.clone())))
            .collect(),
        term: m.current_term,
        vote_committed: m.vote.is_committed(),
    }
}

/// Asks every other voter for a pre-vote at once; how many said yes. Stops waiting once `enough`
/// did: a dead peer (the leader that just died) would otherwise hold the answer for `ttl`, and a
/// late answer is a stale one.
async fn ask(
    network: &Network,
    voters: &[(NodeId, crate::MasterNode)],
    req: &PreVoteRequest,
    ttl: Duration,
    enough: usize,
) -> usize {
    let mut asks = tokio::task::JoinSet::new();
    for (id, node) in voters {
        let client = network.client(*id, node);
        let req = req.clone();
        asks.spawn(async move { client.pre_vote(&req, ttl).await });
    }
    let mut yes = 0;
    while let Some(r) = asks.join_next().await {
        match r {
            Ok(Ok(true)) => {
                yes += 1;
                if yes >= enough {
                    break;
                }
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "no pre-vote answer"),
            Err(e) => tracing::debug!(error = %e, "a pre-vote request failed"),
        }
    }
    yes
}

/// Runs the election timer of master `me` until aborted (see the module doc).
pub async fn drive(
    me: NodeId,
    raft: Raft,
    network: Network,
    contact: Arc<Contact>,
    timing: Timing,
) {
    let mut round = 0u64;
    let mut random_part = random(round);
    let mut quiet_since = Instant::now();
    let mut refused_streak = 0u32;
    let mut wake = quiet_since;
    loop {
        tokio::time::sleep_until(wake).await;
        let now = Instant::now();
        let l = local(&raft, me);
        if let Some(t) = contact.last_activity() {
            quiet_since = quiet_since.max(t);
        }
        if l.is_leader {
            quiet_since = now;
        }
        // The only voter need not wait for anybody (as openraft's own timer does).
        let due = if l.voters.is_empty() {
            Duration::ZERO
        } else {
            timing.stand_timeout(random_part, l.vote_committed)
        };
        if !should_stand(now, quiet_since, due, l.is_voter, l.is_leader) {
            // A leader (or a learner) has nothing to wait for but a change of role: look again
            // in `LOOK_EVERY`. A follower looks when its quiet time would be up (a single
            // leader's "due now" is no reason to spin).
            wake = if l.is_leader || !l.is_voter {
                now + LOOK_EVERY
            } else {
                (quiet_since + due).clamp(now + Duration::from_millis(1), now + LOOK_EVERY)
            };
            continue;
        }
        let req = PreVoteRequest {
            candidate: me,
            term: l.term + 1,
            last_log_id: raft.data_metrics().borrow().last_log,
        };
        let total = l.voters.len() + 1;
        let yes = ask(&network, &l.voters, &req, timing.election_min, total / 2).await;
        // A leader heard or a vote granted meanwhile: another master is ahead; follow it.
        let overtaken = contact.last_activity().is_some_and(|t| t > now);
        if overtaken {
            tracing::debug!("heard a leader or a candidate during the pre-vote: not standing");
        } else if won(yes, total) {
            tracing::info!(
                yes = yes + 1,
                voters = total,
                term = req.term,
                "heard no leader and won the pre-vote: standing for election"
            );
            refused_streak = 0;
            if let Err(e) = raft.trigger().elect().await {
                tracing::warn!(error = %e, "raft stopped; the election driver ends");
                return;
            }
        } else {
            refused_streak += 1;
            // Once per streak at info: a long partition would otherwise log every second.
            if refused_streak == 1 {
                tracing::info!(
                    yes = yes + 1,
                    voters = total,
                    "heard no leader but lost the pre-vote: not standing (retrying quietly)"
                );
            } else {
                tracing::debug!(yes = yes + 1, voters = total, "lost the pre-vote again");
            }
        }
        round += 1;
        quiet_since = Instant::now();
        random_part = random(round);
        wake = quiet_since;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn log(term: u64, index: u64) -> Option<LogId> {
        Some(LogId::new(CommittedLeaderId::new(term, 1), index))
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn stands_only_after_its_timeout_of_quiet_as_a_voter_that_does_not_lead() {
        let t0 = Instant::now();
        let timeout = 900 * MS;
        assert!(!should_stand(t0 + 899 * MS, t0, timeout, true, false));
        assert!(should_stand(t0 + 900 * MS, t0, timeout, true, false));
        assert!(
            !should_stand(t0 + 5000 * MS, t0, timeout, false, false),
            "a learner"
        );
        assert!(
            !should_stand(t0 + 5000 * MS, t0, timeout, true, true),
            "the leader"
        );
        // A clock that reads before the quiet began is not quiet.
        assert!(!should_stand(t0, t0 + 10 * MS, timeout, true, false));
    }

    #[test]
    fn grants_only_without_a_recent_leader_and_to_a_log_as_up_to_date() {
        let t0 = Instant::now();
        let min = 300 * MS;
        let now = t0 + 1000 * MS;
        // Heard the leader 100 ms ago: no, whatever the log.
        assert!(!answer_pre_vote(
            now,
            Some(now - 100 * MS),
            min,
            false,
            log(2, 5),
            log(3, 9)
        ));
        // Heard it 300 ms ago or never: yes to an equal or newer log.
        assert!(answer_pre_vote(
            now,
            Some(now - 300 * MS),
            min,
            false,
            log(2, 5),
            log(2, 5)
        ));
        assert!(answer_pre_vote(now, None, min, false, log(2, 5), log(3, 1)));
        assert!(answer_pre_vote(now, None, min, false, None, None));
        // An older log: a later index in an older term, or a shorter one in the same term.
        assert!(!answer_pre_vote(
            now,
            None,
            min,
            false,
            log(3, 1),
            log(2, 9)
        ));
        assert!(!answer_pre_vote(
            now,
            None,
            min,
            false,
            log(2, 5),
            log(2, 4)
        ));
        assert!(!answer_pre_vote(now, None, min, false, log(2, 5), None));
        // The leader never grants.
        assert!(!answer_pre_vote(now, None, min, true, log(2, 5), log(9, 9)));
    }

    #[test]
    fn a_majority_counts_the_candidate_itself() {
        // The driver stops asking at `total / 2` yes: exactly a majority.
        for total in 1..9 {
            assert!(won(total / 2, total) && (total < 2 || !won(total / 2 - 1, total)));
        }
        assert!(won(0, 1));
        assert!(!won(0, 3));
        assert!(won(1, 3));
        assert!(!won(1, 4));
        assert!(won(2, 4));
        assert!(won(2, 5));
    }

    #[test]
    fn the_stand_timeout_is_a_time_in_the_election_range_after_any_lease() {
        let timing = Timing {
            election_min: 300 * MS,
            election_max: 600 * MS,
        };
        for r in [0, 1, 299_999_999, 300_000_000, u64::MAX] {
            let t = timing.stand_timeout(r, true);
            assert!(t >= 900 * MS && t < 1200 * MS, "{t:?} for {r}");
            let t = timing.stand_timeout(r, false);
            assert!(
                t >= 300 * MS && t < 600 * MS,
                "{t:?} for {r} without a lease"
            );
        }
        assert_eq!(timing.stand_timeout(0, true), 900 * MS);
        let flat = Timing {
            election_min: 300 * MS,
            election_max: 300 * MS,
        };
        assert_eq!(flat.stand_timeout(12345, true), 600 * MS);
    }

    #[test]
    fn contact_keeps_the_latest_leader_and_vote() {
        let c = Contact::default();
        let t0 = Instant::now();
        assert_eq!(c.last_activity(), None);
        c.leader_heard(t0);
        c.vote_granted(t0 + 5 * MS);
        assert_eq!(c.last_leader(), Some(t0));
        assert_eq!(c.last_activity(), Some(t0 + 5 * MS));
        c.leader_heard(t0 + 9 * MS);
        assert_eq!(c.last_activity(), Some(t0 + 9 * MS));
    }
}
