//! Whether the database answers, as every user of one [`super::PgStore`] sees it,
//! and the wake-up of the claimer (docs/scale-out.md, A database restart).
//!
//! Every statement's outcome goes through [`Reach`]: an `UNAVAILABLE` (the server
//! cannot be reached, or closed the connection under the statement) marks the
//! database away, anything the server answered (rows, or an SQL error) marks it
//! back. The first failure of an outage logs one line and starts one prober, which
//! reconnects with a capped exponential backoff ([`Backoff`]); the recovery logs one
//! line. Health (`NOT_SERVING` while away), `GetStats.store_unreachable` and the
//! threads that wait for the database to come back ([`Reach::wait_up`]) read it.
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The first pause of a reconnect backoff, and the longest.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A capped exponential backoff: `min`, 2·`min`, 4·`min`, … up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            next: min,
            min,
            max,
        }
    }

    /// The pause before the next attempt (and doubles the one after, up to the cap).
    pub fn pause(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(BACKOFF_MIN, BACKOFF_MAX)
    }
}

#[derive(Debug)]
struct Away {
    since: Instant,
    since_unix_ms: i64,
    error: String,
    attempts: u32,
}

/// The database's reachability (see the module's text).
pub struct Reach {
    away: Mutex<Option<Away>>,
    cv: Condvar,
    tx: tokio::sync::watch::Sender<bool>,
}

impl Default for Reach {
    fn default() -> Self {
        Reach::new()
    }
}

impl Reach {
    pub fn new() -> Reach {
        Reach {
            away: Mutex::new(None),
            cv: Condvar::new(),
            tx: tokio::sync::watch::channel(true).0,
        }
    }

    pub fn is_up(&self) -> bool {
        self.away.lock().expect("reach lock").is_none()
    }

    /// While away: the last error and since when (Unix ms).
    pub fn away(&self) -> Option<(String, i64)> {
        self.away
            .lock()
            .expect("reach lock")
            .as_ref()
            .map(|a| (a.error.clone(), a.since_unix_ms))
    }

    /// `true` while reachable; changes when an outage starts or ends.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<bool> {
        self.tx.subscribe()
    }

    /// A statement or a connection attempt could not reach the database. Returns
    /// `true` when this starts an outage (the caller starts the prober).
    pub fn failed(&self, error: &str) -> bool {
        let mut away = self.away.lock().expect("reach lock");
        match away.as_mut() {
            Some(a) => {
                a.error = error.to_string();
                a.attempts += 1;
                false
            }
            None => {
                tracing::warn!(
                    "the database is unreachable: {error}; reconnecting with backoff (health NOT_SERVING until it answers)"
                );
                *away = Some(Away {
                    since: Instant::now(),
                    since_unix_ms: crate::server::conversions::now_ms(),
                    error: error.to_string(),
                    attempts: 1,
                });
                drop(away);
                self.tx.send_replace(false);
                true
            }
        }
    }

    /// The database answered.
    pub fn answered(&self) {
        let mut away = self.away.lock().expect("reach lock");
        if let Some(a) = away.take() {
            tracing::info!(
                attempts = a.attempts,
                "the database is reachable again after {:.1}s",
                a.since.elapsed().as_secs_f64()
            );
            drop(away);
            self.tx.send_replace(true);
            self.cv.notify_all();
        }
    }

    /// Waits at most `max` for the database to be reachable; whether it is.
    pub fn wait_up(&self, max: Duration) -> bool {
        let away = self.away.lock().expect("reach lock");
        let (away, _) = self
            .cv
            .wait_timeout_while(away, max, |a| a.is_some())
            .expect("reach lock");
        away.is_none()
    }
}

/// A flag with a condition variable: the claimer sleeps on it between polls, and
/// a `NOTIFY` of a new job (or a local submit) wakes it.
#[derive(Default)]
pub struct Wake {
    set: Mutex<bool>,
    cv: Condvar,
}

impl Wake {
    pub fn set(&self) {
        *self.set.lock().expect("wake lock") = true;
        self.cv.notify_all();
    }

    /// Forgets an earlier wake-up (before looking for work: one that comes after
    /// is kept for [`Wake::wait`]).
    pub fn clear(&self) {
        *self.set.lock().expect("wake lock") = false;
    }

    /// Waits at most `max` for a wake-up; whether there was one.
    pub fn wait(&self, max: Duration) -> bool {
        let set = self.set.lock().expect("wake lock");
        let (mut set, _) = self
            .cv
            .wait_timeout_while(set, max, |s| !*s)
            .expect("wake lock");
        std::mem::take(&mut *set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
        let seen: Vec<u128> = (0..5).map(|_| b.pause().as_millis()).collect();
        assert_eq!(seen, [100, 200, 400, 700, 700]);
        b.reset();
        assert_eq!(b.pause(), Duration::from_millis(100));
    }

    #[test]
    fn an_outage_starts_once_and_ends_once() {
        let r = Reach::new();
        let mut rx = r.subscribe();
        assert!(r.is_up() && r.away().is_none());
        assert!(r.failed("refused"));
        assert!(
            !r.failed("refused again"),
            "the second failure is the same outage"
        );
        assert!(!r.is_up());
        let (err, since) = r.away().expect("away");
        assert_eq!(err, "refused again");
        assert!(since > 0);
        assert!(rx.has_changed().unwrap());
        assert!(!*rx.borrow_and_update());
        assert!(!r.wait_up(Duration::from_millis(10)));
        let r = Arc::new(r);
        let r2 = r.clone();
        let t = std::thread::spawn(move || r2.wait_up(Duration::from_secs(60)));
        r.answered();
        assert!(
            t.join().unwrap(),
            "wait_up returns when the database answers"
        );
        assert!(*rx.borrow_and_update());
        assert!(r.failed("again"), "a later failure is a new outage");
    }

    #[test]
    fn a_wake_before_the_wait_is_kept_and_clear_forgets_it() {
        let w = Wake::default();
        w.set();
        assert!(w.wait(Duration::from_millis(1)));
        assert!(!w.wait(Duration::from_millis(1)), "consumed");
        w.set();
        w.clear();
        assert!(!w.wait(Duration::from_millis(1)));
    }
}
