//! The autoscaler's decision for one function: how many workers it wants, given the backlog
//! (calls queued + running), how long the function has been idle, and a replica count set
//! through the API. No processes, no NATS: [`super`] feeds it and acts on the answer.
//!
//! - Backlog: `ceil(load / target)` workers, between the floor and `max`. More workers start at
//!   once; fewer take over only when fewer have sufficed for the whole `down_window`.
//! - Floor: `min` (at least one for a function that scales to zero), until a scale-to-zero
//!   function has been idle for `zero_after`; then none. A function that has had no call since
//!   the autoscaler started counts as idle, so idle functions start no worker.
//! - Manual: a count set through the API holds until backlog needs more workers than it or the
//!   function has been idle long enough to scale to zero (setting it counts as activity).

use std::time::{Duration, Instant};

use fjord_common::scale::ScalePolicy;

#[derive(Clone, Debug)]
pub struct Sizing {
    pub policy: ScalePolicy,
    /// When the function last had a call queued or running (or was scaled by hand).
    busy_at: Option<Instant>,
    /// Since when fewer workers than are running would have sufficed.
    below_since: Option<Instant>,
    manual: Option<u32>,
}

impl Sizing {
    pub fn new(policy: ScalePolicy) -> Self {
        Sizing {
            policy,
            busy_at: None,
            below_since: None,
            manual: None,
        }
    }

    /// A redeployed function: the new settings, its activity kept, a manual count dropped.
    pub fn redeployed(&self, policy: ScalePolicy) -> Self {
        Sizing {
            policy,
            busy_at: self.busy_at,
            below_since: None,
            manual: None,
        }
    }

    /// A call was published for the function.
    pub fn wake(&mut self, now: Instant) {
        self.busy_at = Some(now);
    }

    pub fn set_manual(&mut self, replicas: u32, now: Instant) {
        self.manual = Some(replicas);
        self.busy_at = Some(now);
        self.below_since = None;
    }

    pub fn manual(&self) -> Option<u32> {
        self.manual
    }

    pub fn idle_for(&self, now: Instant) -> Option<Duration> {
        self.busy_at.map(|t| now.saturating_duration_since(t))
    }

    /// The workers wanted with `current` running and `load` calls queued or running.
    pub fn decide(&mut self, current: u32, load: u64, now: Instant) -> u32 {
        if load > 0 {
            self.busy_at = Some(now);
        }
        let policy = &self.policy;
        let idle_to_zero = policy.zero
            && self
                .idle_for(now)
                .is_none_or(|idle| idle >= policy.zero_after);
        let need = policy.needed(load);
        if self.manual.is_some_and(|m| need > m) || idle_to_zero {
            self.manual = None;
        }
        let wanted = match self.manual {
            Some(m) => m.min(policy.max),
            None if idle_to_zero => 0,
            None => need.max(policy.floor()).min(policy.max),
        };
        if wanted >= current || self.manual.is_some() || idle_to_zero {
            self.below_since = None;
            return wanted;
        }
        let since = *self.below_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= policy.down_window {
            self.below_since = None;
            wanted
        } else {
            current
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min: u32, max: u32, zero: bool) -> ScalePolicy {
        ScalePolicy {
            min,
            max,
            target: 10,
            zero: zero || min == 0,
            zero_after: Duration::from_secs(60),
            down_window: Duration::from_secs(10),
        }
    }

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn backlog_scales_up_at_once_and_down_after_the_window() {
        let t = Instant::now();
        let mut s = Sizing::new(policy(1, 8, false));
        assert_eq!(s.decide(0, 0, t), 1, "min workers without calls");
        assert_eq!(s.decide(1, 35, t), 4, "ceil(35 / 10)");
        assert_eq!(s.decide(4, 10_000, t), 8, "capped at max");
        assert_eq!(
            s.decide(8, 15, at(t, 1)),
            8,
            "fewer suffice, window not over"
        );
        assert_eq!(s.decide(8, 15, at(t, 10)), 8);
        assert_eq!(s.decide(8, 15, at(t, 11)), 2, "window over");
        assert_eq!(s.decide(2, 0, at(t, 12)), 2);
        assert_eq!(
            s.decide(2, 25, at(t, 13)),
            3,
            "more again: at once, window reset"
        );
        assert_eq!(s.decide(3, 0, at(t, 14)), 3);
        assert_eq!(s.decide(3, 0, at(t, 24)), 1, "down to min, never below");
        assert_eq!(
            s.decide(1, 0, at(t, 1_000)),
            1,
            "no scale to zero without the setting"
        );
    }

    #[test]
    fn a_dip_shorter_than_the_window_keeps_the_workers() {
        let t = Instant::now();
        let mut s = Sizing::new(policy(1, 8, false));
        assert_eq!(s.decide(1, 80, t), 8);
        assert_eq!(s.decide(8, 0, at(t, 5)), 8);
        assert_eq!(
            s.decide(8, 80, at(t, 6)),
            8,
            "busy again: the dip is forgotten"
        );
        assert_eq!(
            s.decide(8, 0, at(t, 12)),
            8,
            "a new window starts at the next dip"
        );
        assert_eq!(s.decide(8, 0, at(t, 22)), 1);
    }

    #[test]
    fn idle_functions_start_nothing_and_wake_on_a_call() {
        let t = Instant::now();
        let mut s = Sizing::new(policy(0, 4, false));
        assert_eq!(s.decide(0, 0, t), 0, "never called: no worker");
        s.wake(at(t, 1));
        assert_eq!(
            s.decide(0, 0, at(t, 1)),
            1,
            "woken: one before the queue shows it"
        );
        assert_eq!(s.decide(1, 1, at(t, 2)), 1);
        assert_eq!(s.decide(1, 0, at(t, 61)), 1, "idle for 59 s");
        assert_eq!(s.decide(1, 0, at(t, 62)), 0, "idle for the zero duration");
    }

    #[test]
    fn scale_zero_keeps_min_while_busy() {
        let t = Instant::now();
        let mut s = Sizing::new(policy(3, 6, true));
        assert_eq!(s.decide(0, 0, t), 0);
        assert_eq!(s.decide(0, 1, t), 3, "min applies once busy");
        assert_eq!(s.decide(3, 0, at(t, 59)), 3);
        assert_eq!(s.decide(3, 0, at(t, 60)), 0);
    }

    #[test]
    fn a_manual_count_holds_until_backlog_or_idleness_overrides_it() {
        let t = Instant::now();
        let mut s = Sizing::new(policy(1, 8, false));
        s.set_manual(5, t);
        assert_eq!(s.decide(1, 0, t), 5, "up by hand");
        assert_eq!(s.decide(5, 0, at(t, 500)), 5, "holds against min");
        assert_eq!(s.decide(5, 49, at(t, 501)), 5, "backlog fits");
        assert_eq!(
            s.decide(5, 70, at(t, 502)),
            7,
            "backlog needs more: autoscaling again"
        );
        assert_eq!(s.manual(), None);
        s.set_manual(0, at(t, 503));
        assert_eq!(s.decide(7, 0, at(t, 503)), 0, "down by hand is at once");
        assert_eq!(s.decide(0, 1, at(t, 504)), 1, "a call needs a worker");

        let mut z = Sizing::new(policy(0, 8, false));
        z.set_manual(4, t);
        assert_eq!(z.decide(0, 0, at(t, 59)), 4);
        assert_eq!(
            z.decide(4, 0, at(t, 60)),
            0,
            "idle long enough to scale to zero"
        );
        assert_eq!(z.manual(), None);
    }
}
