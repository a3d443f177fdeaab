//! Time as the controller's decisions see it. Every decision takes `now` from one [`Clock`]
//! handed in: the wall clock in the binary, a clock the caller moves in tests and in `simulate`,
//! so the same code runs a cycle live and a year of cycles in virtual time.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

/// The source of `now`.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system's wall clock.
    #[default]
    Real,
    /// Time that moves only when told ([`Clock::set`], [`Clock::advance`]); clones share it.
    Virtual(Arc<Mutex<DateTime<Utc>>>),
}

impl Clock {
    /// A virtual clock standing at `t`.
    pub fn starting_at(t: DateTime<Utc>) -> Self {
        Clock::Virtual(Arc::new(Mutex::new(t)))
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::Real => Utc::now(),
            Clock::Virtual(t) => *t.lock().expect("clock lock"),
        }
    }

    /// Moves a virtual clock to `t` (a real clock cannot be moved: no effect).
    pub fn set(&self, t: DateTime<Utc>) {
        if let Clock::Virtual(v) = self {
            *v.lock().expect("clock lock") = t;
        }
    }

    /// Moves a virtual clock forward by `d` (no effect on a real clock).
    pub fn advance(&self, d: std::time::Duration) {
        if let Clock::Virtual(v) = self {
            let mut t = v.lock().expect("clock lock");
            *t += chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_virtual_clock_moves_only_when_told_and_clones_share_it() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let c = Clock::starting_at(t0);
        let seen_by_other = c.clone();
        assert_eq!(c.now(), t0);
        c.advance(std::time::Duration::from_secs(90));
        assert_eq!(seen_by_other.now(), t0 + chrono::Duration::seconds(90));
        c.set(t0);
        assert_eq!(seen_by_other.now(), t0);
        let real = Clock::Real;
        real.set(t0);
        assert!(real.now() > t0, "the real clock is not moved");
    }
}
