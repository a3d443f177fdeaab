//! Monotonic energy totals from hardware counters that wrap (`energy_uj` wraps at
//! `max_energy_range_uj`, every few minutes on a busy package at 32 bits).

/// Accumulates a wrapping hardware counter into a total that only grows.
#[derive(Debug, Clone, Default)]
pub struct WrappingCounter {
    last: Option<u64>,
    /// Where the counter wraps; 0 when unknown (a drop is then taken as a reset, not a wrap).
    max: u64,
    total: u128,
}

impl WrappingCounter {
    pub fn new(max: u64) -> Self {
        Self {
            max,
            ..Self::default()
        }
    }

    /// Feeds a raw reading; returns the accumulated total since the first reading.
    pub fn update(&mut self, raw: u64) -> u128 {
        if let Some(last) = self.last {
            let delta = if raw >= last {
                raw - last
            } else if self.max > 0 && last <= self.max {
                // Wrapped: count up to the range's end, then from zero.
                (self.max - last) + raw
            } else {
                // A counter that was reset (driver reload): we cannot know what was lost.
                raw
            };
            self.total += delta as u128;
        }
        self.last = Some(raw);
        self.total
    }

    pub fn total(&self) -> u128 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_at_max_range() {
        let mut c = WrappingCounter::new(262_143_328_850);
        assert_eq!(c.update(262_143_000_000), 0);
        assert_eq!(c.update(262_143_328_000), 328_000);
        // wrapped: 850 to the end, then 1_000 from zero
        assert_eq!(c.update(1_000), 328_000 + 850 + 1_000);
    }

    #[test]
    fn unknown_range_drop_is_a_reset() {
        let mut c = WrappingCounter::new(0);
        c.update(500);
        assert_eq!(c.update(100), 100);
    }

    proptest::proptest! {
        #[test]
        fn total_never_decreases(raws in proptest::collection::vec(0u64..1_000_000, 1..50)) {
            let mut c = WrappingCounter::new(1_000_000);
            let mut prev = 0;
            for r in raws {
                let t = c.update(r);
                proptest::prop_assert!(t >= prev);
                prev = t;
            }
        }
    }
}
