//! Callbacks attempted before their outcome is recorded in PostgreSQL.
//!
//! An outcome is durable once the worker's publish is acknowledged: it is in the stream. The
//! recorder hands each outcome with a callback URL over twice: when it reads it, before its
//! batch is written, and once the write has decided whether that outcome made the call final
//! (the first outcome in stream order wins). The first attempt runs meanwhile; its line in the
//! delivery log (and the callback's state) is written only after the decision, because both
//! belong to the recorded outcome.
//!
//! An outcome is not attempted early when another outcome of the same call is still undecided
//! or was recorded recently, nor when it is a cancellation (the outcome that most often has a
//! rival): the decision is awaited instead. An outcome attempted early that then loses is
//! therefore a repeat of the winner (same `webhook-id`), except in a race this cannot see: a
//! cancellation crossing the call's own finish within the recorder's lag, read by another
//! control process, or reaching a call final longer ago than [`RECENT`] remembers.

use std::collections::{HashMap, HashSet, VecDeque};

use fjord_common::CallId;
use fjord_common::store::callbacks::{Attempt, Callback};

/// Callbacks attempted early and still undecided, at most.
pub const MAX_UNDECIDED: usize = 20_000;
/// Calls made final lately that are remembered, so a late outcome of one waits for the decision.
const RECENT: usize = 65_536;

#[derive(Default)]
pub struct Early {
    entries: HashMap<CallId, Entry>,
    recent: HashSet<CallId>,
    recent_order: VecDeque<CallId>,
}

struct Entry {
    webhook_id: String,
    /// Not attempted: only makes the call's other outcomes wait for its decision.
    held: bool,
    won: bool,
    /// The attempt that ended before the decision arrived.
    attempt: Option<Attempt>,
}

/// What the recorder's decision leaves the dispatcher to do.
#[derive(Debug)]
pub enum Decided {
    /// Log this attempt (it ended before the decision).
    Log(Attempt),
    /// Attempt the callback now: it was not attempted early.
    Deliver,
    Nothing,
}

impl Early {
    /// Whether `callback` may be attempted before it is recorded; if so it is tracked until
    /// the decision.
    pub fn admit(&mut self, callback: &Callback) -> bool {
        if self.entries.len() >= MAX_UNDECIDED
            || self.entries.contains_key(&callback.call_id)
            || self.recent.contains(&callback.call_id)
        {
            return false;
        }
        self.entries.insert(
            callback.call_id,
            Entry {
                webhook_id: callback.webhook_id.clone(),
                held: false,
                won: false,
                attempt: None,
            },
        );
        true
    }

    /// Notes an outcome that waits for the write: until it is decided, the call's other
    /// outcomes wait too.
    pub fn hold(&mut self, callback: &Callback) {
        if self.entries.len() < MAX_UNDECIDED && !self.entries.contains_key(&callback.call_id) {
            self.entries.insert(
                callback.call_id,
                Entry {
                    webhook_id: callback.webhook_id.clone(),
                    held: true,
                    won: false,
                    attempt: None,
                },
            );
        }
    }

    /// Whether an early callback waiting for a slot is still wanted (its outcome has not lost).
    pub fn wanted(&self, callback: &Callback) -> bool {
        self.entry(callback.call_id, &callback.webhook_id).is_some()
    }

    /// Whether an early callback's outcome has been recorded as the call's (so its row exists,
    /// held by this dispatcher).
    pub fn recorded(&self, callback: &Callback) -> bool {
        self.entry(callback.call_id, &callback.webhook_id)
            .is_some_and(|e| e.won)
    }

    /// An early attempt ended: the attempt to log now, if the decision is already in.
    pub fn attempted(&mut self, attempt: Attempt) -> Option<Attempt> {
        let entry = self.entries.get_mut(&attempt.call_id)?;
        if entry.webhook_id != attempt.webhook_id {
            return None;
        }
        if entry.won {
            self.entries.remove(&attempt.call_id);
            return Some(attempt);
        }
        entry.attempt = Some(attempt);
        None
    }

    /// The recorder's decision on one outcome (`webhook_id` names it): whether it made the call
    /// final.
    pub fn decided(&mut self, call_id: CallId, webhook_id: &str, won: bool) -> Decided {
        if won {
            self.remember(call_id);
        }
        let Some(entry) = self.entries.get_mut(&call_id) else {
            return if won {
                Decided::Deliver
            } else {
                Decided::Nothing
            };
        };
        if entry.webhook_id != webhook_id {
            // Another outcome of the call is the one attempted early; this one waited.
            return if won {
                Decided::Deliver
            } else {
                Decided::Nothing
            };
        }
        if !won || entry.held {
            self.entries.remove(&call_id);
            return if won {
                Decided::Deliver
            } else {
                Decided::Nothing
            };
        }
        match entry.attempt.take() {
            Some(attempt) => {
                self.entries.remove(&call_id);
                Decided::Log(attempt)
            }
            None => {
                entry.won = true;
                Decided::Nothing
            }
        }
    }

    fn entry(&self, call_id: CallId, webhook_id: &str) -> Option<&Entry> {
        self.entries
            .get(&call_id)
            .filter(|e| e.webhook_id == webhook_id)
    }

    fn remember(&mut self, call_id: CallId) {
        if self.recent.insert(call_id) {
            self.recent_order.push_back(call_id);
            if self.recent_order.len() > RECENT
                && let Some(old) = self.recent_order.pop_front()
            {
                self.recent.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn callback(call_id: CallId, seq: i64) -> Callback {
        Callback {
            call_id,
            function: "f".into(),
            url: "http://127.0.0.1/".into(),
            host: "127.0.0.1".into(),
            status: "succeeded".into(),
            function_status: 200,
            headers: Vec::new(),
            body: Default::default(),
            start_time_ns: 0,
            duration_seconds: 0.0,
            traceparent: None,
            webhook_id: fjord_common::callback::webhook_id(call_id, seq),
            call_attempts: 1,
            attempts: 0,
            round_at: chrono::Utc::now(),
            lease: uuid::Uuid::nil(),
        }
    }

    fn attempt(callback: &Callback) -> Attempt {
        Attempt {
            call_id: callback.call_id,
            lease: callback.lease,
            at: chrono::Utc::now(),
            url: callback.url.clone(),
            webhook_id: callback.webhook_id.clone(),
            status_code: Some(200),
            error: None,
            duration_seconds: 0.001,
            outcome: "delivered",
            next_at: None,
        }
    }

    #[test]
    fn an_attempt_is_logged_once_its_outcome_is_recorded_whichever_comes_first() {
        let mut early = Early::default();
        let (a, b) = (callback(CallId::new(), 7), callback(CallId::new(), 8));
        assert!(early.admit(&a) && early.admit(&b));
        // Attempt ends first, decision second.
        assert!(early.attempted(attempt(&a)).is_none());
        assert!(matches!(
            early.decided(a.call_id, &a.webhook_id, true),
            Decided::Log(_)
        ));
        // Decision first, attempt second.
        assert!(matches!(
            early.decided(b.call_id, &b.webhook_id, true),
            Decided::Nothing
        ));
        assert!(early.recorded(&b));
        assert!(early.attempted(attempt(&b)).is_some());
        assert!(early.entries.is_empty());
    }

    #[test]
    fn a_second_outcome_or_a_recently_final_call_waits_for_the_decision() {
        let mut early = Early::default();
        let call = CallId::new();
        let (first, second) = (callback(call, 7), callback(call, 9));
        assert!(early.admit(&first));
        assert!(
            !early.admit(&second),
            "the first outcome is still undecided"
        );
        assert!(matches!(
            early.decided(call, &first.webhook_id, true),
            Decided::Nothing
        ));
        assert!(matches!(
            early.decided(call, &second.webhook_id, false),
            Decided::Nothing
        ));
        assert!(early.attempted(attempt(&first)).is_some());
        assert!(!early.admit(&second), "the call was made final lately");
        // Re-driven later, the call's next outcome is delivered once recorded.
        assert!(matches!(
            early.decided(call, &callback(call, 12).webhook_id, true),
            Decided::Deliver
        ));
    }

    #[test]
    fn a_held_cancellation_makes_the_finish_behind_it_wait() {
        let mut early = Early::default();
        let call = CallId::new();
        let (cancel, finish) = (callback(call, 5), callback(call, 6));
        early.hold(&cancel);
        assert!(!early.admit(&finish));
        assert!(matches!(
            early.decided(call, &cancel.webhook_id, true),
            Decided::Deliver
        ));
        assert!(matches!(
            early.decided(call, &finish.webhook_id, false),
            Decided::Nothing
        ));
        assert!(early.entries.is_empty());
    }

    #[test]
    fn an_outcome_that_lost_is_neither_attempted_nor_logged() {
        let mut early = Early::default();
        let c = callback(CallId::new(), 3);
        assert!(early.admit(&c));
        assert!(matches!(
            early.decided(c.call_id, &c.webhook_id, false),
            Decided::Nothing
        ));
        assert!(!early.wanted(&c));
        assert!(early.attempted(attempt(&c)).is_none());
    }
}
