//! The runway forecast (issue #27, DESIGN.md "Continuity"): how long a target's battery lasts at
//! its current draw, when it charges again, and how much less it would have to draw to last until
//! then. Pure: no I/O, no clock (`now` is an input), the same input gives the same answer.
//!
//! Model and its assumptions:
//! - The *supply* is what the outside (solar, mains) delivers to the target: battery charge power
//!   − battery discharge power + the target's draw. It is expected to repeat with
//!   `spec.forecast.period`: each hour ahead is the mean of the same hour of the last
//!   `spec.forecast.periods` periods ([`SupplyProfile::from_history`]). Charge and discharge
//!   efficiency are whatever the measured supply already shows (nothing is added for them).
//! - The draw stays at its current value for the whole horizon: the forecast answers "what if
//!   nothing changes", which is what the ladder needs to decide whether something must.
//! - Within an hour the supply is constant (the profile's mean), so the battery level is linear
//!   there and the time it crosses its reserve is exact to the second; the recharge starts at
//!   the beginning of the first hour whose supply exceeds the draw.
//! - Unknown stays unknown: a missing hour makes the whole profile unknown (never a made-up 0 W),
//!   and a target without battery energy, draw or capacity has no forecast.

use std::collections::HashMap;
use std::time::Duration;

use edgewatt_crds::StarvedTarget;

use crate::planner::{TargetId, TargetSignals, TargetSnapshot, Time};

/// One hour, the profile's resolution.
const HOUR_S: f64 = 3600.0;

/// A sample counts for an hour when it lies within this of the hour's start.
const NEAREST_MS: i64 = 30 * 60 * 1000;

/// The longest profile built: a horizon beyond a year is cut to a year (the CRD does not bound
/// it, and the profile is allocated per target).
pub const MAX_HOURS: usize = 366 * 24;

/// [`savings_needed`]'s precision: the answer is at most this many watts above the least
/// reduction that would do.
pub const SAVINGS_TOLERANCE_W: f64 = 1e-3;

/// Each target's supply profile and forecast, aligned with the cycle's targets (index `i` is
/// target `i`): what the controller's cycle and `simulate` compute before the plan.
#[derive(Debug, Default)]
pub struct Forecasts {
    pub profiles: Vec<Option<SupplyProfile>>,
    pub forecasts: Vec<Option<Forecast>>,
}

impl Forecasts {
    /// The status's starved targets with their forecast runway and recharge, in minutes
    /// (a tenth), where the forecast is known; `targets` are the ones these forecasts align with.
    pub fn fill_starved(
        &self,
        mut starved: Vec<StarvedTarget>,
        targets: &[TargetSnapshot],
    ) -> Vec<StarvedTarget> {
        let index: HashMap<&TargetId, usize> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| (&t.id, i))
            .collect();
        for s in &mut starved {
            let id = TargetId {
                kind: s.kind,
                namespace: s.namespace.clone(),
                name: s.name.clone(),
            };
            let Some(f) = index
                .get(&id)
                .and_then(|i| self.forecasts.get(*i))
                .and_then(Option::as_ref)
            else {
                continue;
            };
            let minutes = |d: Duration| (d.as_secs_f64() / 6.0).round() / 10.0;
            s.runway_minutes = f.runway.map(minutes);
            s.recharge_minutes = f.recharge.map(minutes);
        }
        starved
    }
}

/// The expected supply (watts) for each hour ahead: `hours[i]` is the mean over
/// `[now + i h, now + (i + 1) h)`.
#[derive(Debug, Clone, PartialEq)]
pub struct SupplyProfile {
    pub hours: Vec<f64>,
}

impl SupplyProfile {
    /// The profile from hourly samples of the target's supply, each `(t, watts)` standing for the
    /// hour that starts at `t` (a runtime reading `avg_over_time(supply[1h])` at `T` passes
    /// `T − 1h`). `hours[i]` is the mean, over the last `periods` periods `k = 1..=periods`, of
    /// the sample nearest to `now + i·1h − k·period` within ±30 min; a period without one is
    /// skipped. Samples after `now` and non-finite values are ignored; the samples need not be
    /// sorted (sorted input, as a range query returns it, avoids a copy).
    ///
    /// `None` when some hour ahead has no sample in any period (unknown, never a made-up 0 W),
    /// when the horizon is zero, or when `period` is zero or out of range. The profile has
    /// `ceil(horizon / 1h)` hours (at most [`MAX_HOURS`]).
    pub fn from_history(
        samples: &[(Time, f64)],
        now: Time,
        period: Duration,
        periods: u32,
        horizon: Duration,
    ) -> Option<Self> {
        let n = ((horizon.as_secs_f64() / HOUR_S).ceil() as usize).min(MAX_HOURS);
        let period_ms = i64::try_from(period.as_millis()).ok()?;
        if n == 0 || period_ms == 0 || periods == 0 {
            return None;
        }
        let now_ms = now.timestamp_millis();
        let sorted;
        let samples = if samples.is_sorted_by_key(|s| s.0) {
            samples
        } else {
            let mut copy = samples.to_vec();
            copy.sort_by_key(|s| s.0);
            sorted = copy;
            &sorted[..]
        };
        // Only the past counts, and only finite readings.
        let past: Vec<(i64, f64)> = samples
            .iter()
            .map(|(t, v)| (t.timestamp_millis(), *v))
            .take_while(|(t, _)| *t <= now_ms)
            .filter(|(_, v)| v.is_finite())
            .collect();
        let mut sum = vec![0.0; n];
        let mut count = vec![0u32; n];
        for k in 1..=i64::from(periods) {
            let start = now_ms.checked_sub(period_ms.checked_mul(k)?)?;
            // The wanted times rise with `i`: one walk over the samples per period.
            let mut j = 0;
            for i in 0..n {
                let want = start + i as i64 * 3_600_000;
                while j < past.len() && past[j].0 < want {
                    j += 1;
                }
                let before = j.checked_sub(1).map(|b| past[b]);
                let after = past.get(j).copied();
                let nearest = match (before, after) {
                    (Some(b), Some(a)) if a.0 - want < want - b.0 => Some(a),
                    (Some(b), _) => Some(b),
                    (None, a) => a,
                };
                if let Some((t, v)) = nearest.filter(|(t, _)| (t - want).abs() <= NEAREST_MS) {
                    debug_assert!(t <= now_ms);
                    sum[i] += v;
                    count[i] += 1;
                }
            }
        }
        let hours = sum
            .iter()
            .zip(&count)
            .map(|(s, c)| (*c > 0).then(|| s / f64::from(*c)))
            .collect::<Option<Vec<f64>>>()?;
        Some(Self { hours })
    }

    /// How far the profile looks ahead.
    pub fn horizon(&self) -> Duration {
        Duration::from_secs(self.hours.len() as u64 * 3600)
    }
}

/// What one target's forecast starts from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForecastInput<'a> {
    /// Energy in the battery now, joules.
    pub energy_j: f64,
    /// Full battery, joules; `None`: no upper clamp (the level never tops out).
    pub capacity_j: Option<f64>,
    /// The level the runway is measured to (`spec.forecast.reservePercent` of capacity), joules.
    pub reserve_j: f64,
    /// The target's draw now, watts; assumed constant over the horizon.
    pub draw_w: f64,
    pub profile: &'a SupplyProfile,
}

impl<'a> ForecastInput<'a> {
    /// The input for a target from its signals: energy, capacity (measured, else energy / state of
    /// charge), the reserve as `reserve_percent` of capacity, and the draw (the target's, else
    /// the battery's discharge, as the planner's per-workload share does). `None` when one of
    /// them is unknown or not a finite number (no forecast on data not seen).
    pub fn of(
        signals: &TargetSignals,
        reserve_percent: f64,
        profile: &'a SupplyProfile,
    ) -> Option<Self> {
        let energy_j = signals.battery_energy_joules.filter(|e| e.is_finite())?;
        let capacity_j = signals
            .battery_capacity_joules
            .or_else(|| {
                signals
                    .battery_ratio
                    .filter(|r| *r > 0.0)
                    .map(|r| energy_j / r)
            })
            .filter(|c| c.is_finite() && *c > 0.0)?;
        let draw_w = signals
            .watts
            .or(signals.battery_draw_watts)
            .filter(|d| d.is_finite())?;
        let reserve_j = capacity_j * reserve_percent.clamp(0.0, 100.0) / 100.0;
        if !reserve_j.is_finite() {
            return None;
        }
        Some(Self {
            energy_j,
            capacity_j: Some(capacity_j),
            reserve_j,
            draw_w,
            profile,
        })
    }

    /// The same input at another draw.
    pub fn at_draw(&self, draw_w: f64) -> Self {
        Self { draw_w, ..*self }
    }

    /// The level now, within `[0, capacity]`.
    fn start(&self) -> f64 {
        let e = self.energy_j.max(0.0);
        self.capacity_j.map_or(e, |c| e.min(c))
    }

    /// One hour at supply `s`: the level at its end.
    #[inline]
    fn after_hour(&self, e: f64, s: f64) -> f64 {
        let e = (e + (s - self.draw_w) * HOUR_S).max(0.0);
        self.capacity_j.map_or(e, |c| e.min(c))
    }
}

/// The forecast of one target. `None` fields: not within the profile's horizon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forecast {
    /// Until the battery is at or below its reserve while the supply does not exceed the draw
    /// (zero when that is so now). A battery below its reserve that is charging has not run out:
    /// its runway starts again from where the charge leaves it.
    pub runway: Option<Duration>,
    /// Until the supply exceeds the draw (zero when it does now).
    pub recharge: Option<Duration>,
}

/// Steps through the profile's hours: the level follows `E(t + dt) = clamp(E + (supply − draw)·dt,
/// 0, capacity)`; the runway ends at the first time it is at or below the reserve while not
/// charging (interpolated inside the hour it crosses), the recharge at the start of the first
/// hour whose supply exceeds the draw.
pub fn forecast(input: &ForecastInput) -> Forecast {
    let mut e = input.start();
    let mut runway = None;
    let mut recharge = None;
    for (i, &s) in input.profile.hours.iter().enumerate() {
        let t = i as f64 * HOUR_S;
        let net = s - input.draw_w;
        if recharge.is_none() && net > 0.0 {
            recharge = Some(t);
        }
        if runway.is_none() {
            runway = runs_out(input, e, net).map(|dt| t + dt);
        }
        if runway.is_some() && recharge.is_some() {
            break;
        }
        e = input.after_hour(e, s);
    }
    Forecast {
        runway: runway.map(secs),
        recharge: recharge.map(secs),
    }
}

/// When, within an hour that starts at level `e` with net supply `net`, the level is at or below
/// the reserve while not charging: seconds into the hour.
#[inline]
fn runs_out(input: &ForecastInput, e: f64, net: f64) -> Option<f64> {
    if net > 0.0 {
        None
    } else if e <= input.reserve_j {
        Some(0.0)
    } else if net < 0.0 && e + net * HOUR_S <= input.reserve_j {
        Some((e - input.reserve_j) / -net)
    } else {
        None
    }
}

/// A non-negative, finite number of seconds as a `Duration` (anything else: zero).
fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or_default()
}

/// `starvation.runwayBelowRecharge`: the battery reaches its reserve before the recharge, or
/// within the horizon while no recharge is forecast within it.
pub fn below_recharge(f: &Forecast) -> bool {
    match (f.runway, f.recharge) {
        (Some(r), Some(c)) => r < c,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// The ladder's goal at `input`'s draw: the battery lasts until the forecast recharge (the end
/// of the horizon when none is forecast within it) with enough above its reserve to carry the
/// draw for `margin` more with no supply at all — the runway reaches the recharge plus `margin`
/// even if the sunrise is `margin` late or overcast. A target whose supply exceeds its draw now
/// (recharge now) reaches any margin. With the restore margin added, the restore test.
///
/// Why not "runway ≥ recharge + margin" on the forecast itself: after the recharge the forecast
/// level rises, so a runway that reaches the recharge reaches any margin after it and the margin
/// would buy nothing. The energy buffer is the same test with the recharge delayed by `margin`.
/// It is monotone in the draw (a lower draw never fails where a higher one passes), which
/// [`savings_needed`] relies on. At margin 0 it is the negation of [`below_recharge`] (up to a
/// runway ending exactly at the recharge or the horizon).
pub fn reaches(input: &ForecastInput, margin: Duration) -> bool {
    let hours = &input.profile.hours;
    let draw = input.draw_w;
    if hours.first().is_some_and(|s| *s > draw) {
        return true;
    }
    let buffer = margin.as_secs_f64() * draw;
    let mut e = input.start();
    for &s in hours {
        let net = s - draw;
        if net > 0.0 {
            return e - input.reserve_j >= buffer;
        }
        if runs_out(input, e, net).is_some() {
            return false;
        }
        e = input.after_hour(e, s);
    }
    e - input.reserve_j >= buffer
}

/// [`spare_watts`]'s precision, watts.
pub const SPARE_TOLERANCE_W: f64 = 0.05;

/// The most the draw may rise for the battery still not to reach its reserve before the
/// recharge ([`below_recharge`] false): what a target can take on from a starved one without
/// being starved by the forecast itself right after (issue #28: `simulate` on the winter site
/// showed pods moved onto nodes whose small batteries could not carry them through the night,
/// starved there five minutes later and moved again — 65 flaps in a fortnight). 0 when it is
/// below its recharge already. A higher draw moves the runway earlier and the recharge later,
/// so the verdict is monotone in the draw and a bisection finds the limit (within
/// [`SPARE_TOLERANCE_W`], from below).
pub fn spare_watts(input: &ForecastInput) -> f64 {
    let ok = |extra: f64| !below_recharge(&forecast(&input.at_draw(input.draw_w + extra)));
    if !input.draw_w.is_finite() || !ok(0.0) {
        return 0.0;
    }
    // At this much more the draw exceeds every hour's supply (no recharge) and drains the
    // battery above its reserve within the first hour: never ok.
    let max_supply = input.profile.hours.iter().copied().fold(0.0, f64::max);
    let above = (input.start() - input.reserve_j).max(0.0) / HOUR_S;
    let mut hi = (max_supply - input.draw_w).max(0.0) + above + 1.0;
    if !hi.is_finite() || ok(hi) {
        return if hi.is_finite() { hi } else { 0.0 };
    }
    // `lo` is ok, `hi` is not.
    let mut lo = 0.0;
    while hi - lo > SPARE_TOLERANCE_W {
        let mid = lo + (hi - lo) / 2.0;
        if ok(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// How much the draw must drop for the runway to reach the recharge plus a margin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Need {
    /// It does at the current draw.
    Enough,
    /// The least reduction, in watts (at most [`SAVINGS_TOLERANCE_W`] above it), that does.
    Watts(f64),
    /// Not even a draw of 0 W would do (the battery is at its reserve at night, or the supply
    /// itself is negative): every step helps, none is enough.
    Impossible,
}

/// The least reduction `S` of the draw such that, at `draw − S`, the battery [`reaches`] the
/// recharge plus `margin`. A lower draw moves the runway later and the recharge earlier and
/// leaves more in the battery, so the condition is monotone in `S` and a bisection finds it
/// (≈ log2(draw / tolerance) short walks over the hours until the recharge).
pub fn savings_needed(input: &ForecastInput, margin: Duration) -> Need {
    if reaches(input, margin) {
        return Need::Enough;
    }
    let draw = input.draw_w;
    if draw.is_nan() || draw <= 0.0 || !reaches(&input.at_draw(0.0), margin) {
        return Need::Impossible;
    }
    // `lo` does not do, `hi` does.
    let (mut lo, mut hi) = (0.0, draw);
    while hi - lo > SAVINGS_TOLERANCE_W {
        let mid = lo + (hi - lo) / 2.0;
        if reaches(&input.at_draw(draw - mid), margin) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Need::Watts(hi)
}

#[cfg(test)]
mod tests {
    //! Hand-computed cases and properties of the runway forecast (issue #27).
    use super::*;
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;

    const H: u64 = 3600;

    fn hours(n: u64) -> Duration {
        Duration::from_secs(n * H)
    }

    fn profile(hours: &[f64]) -> SupplyProfile {
        SupplyProfile {
            hours: hours.to_vec(),
        }
    }

    fn input(
        p: &SupplyProfile,
        energy_wh: f64,
        capacity_wh: f64,
        reserve_wh: f64,
        draw: f64,
    ) -> ForecastInput<'_> {
        ForecastInput {
            energy_j: energy_wh * H as f64,
            capacity_j: Some(capacity_wh * H as f64),
            reserve_j: reserve_wh * H as f64,
            draw_w: draw,
            profile: p,
        }
    }

    fn now() -> Time {
        Utc.with_ymd_and_hms(2025, 1, 4, 0, 0, 0).unwrap()
    }

    /// Three days of hourly samples before `now`: 10 W per hour of the day, +100 W per day.
    fn three_days() -> Vec<(Time, f64)> {
        (0..72)
            .map(|h| {
                let t = now() - chrono::Duration::hours(72) + chrono::Duration::hours(h);
                (t, 10.0 * (h % 24) as f64 + 100.0 * (h / 24) as f64)
            })
            .collect()
    }

    /// Issue #28: what a target can take on is the most draw that still reaches its recharge:
    /// 400 Wh above the reserve over 10 dark hours carry 40 W, so at 10 W it has 30 W to
    /// spare; already below its recharge it has none; each answer is one a forecast confirms.
    #[test]
    fn spare_watts_is_the_most_more_draw_that_still_reaches_the_recharge() {
        let mut hours_ = vec![0.0; 10];
        hours_.extend([100.0; 38]);
        let p = profile(&hours_);
        let i = input(&p, 500.0, 1000.0, 100.0, 10.0);
        let spare = spare_watts(&i);
        assert!(
            (30.0 - SPARE_TOLERANCE_W..=30.0).contains(&spare),
            "{spare}"
        );
        assert!(!below_recharge(&forecast(&i.at_draw(10.0 + spare))));
        assert!(below_recharge(&forecast(
            &i.at_draw(10.0 + spare + 2.0 * SPARE_TOLERANCE_W)
        )));
        assert_eq!(spare_watts(&input(&p, 500.0, 1000.0, 100.0, 50.0)), 0.0);
        // Sun now: it can draw up to the sun's 100 W and then the 400 Wh for the first hour.
        let sunny = profile(&[100.0; 48]);
        let s = spare_watts(&input(&sunny, 500.0, 1000.0, 100.0, 10.0));
        assert!(!below_recharge(&forecast(&input(
            &sunny,
            500.0,
            1000.0,
            100.0,
            10.0 + s
        ))));
        assert!(s >= 90.0, "{s}");
    }

    /// Issue #27: each hour ahead is the mean of the same hour in the last `periods` periods;
    /// beyond one period ahead the most recent period lies in the future and is skipped.
    #[test]
    fn profile_is_the_mean_of_the_same_hours_of_earlier_periods() {
        let p = SupplyProfile::from_history(&three_days(), now(), hours(24), 3, hours(48)).unwrap();
        assert_eq!(p.hours.len(), 48);
        for i in 0..24 {
            // Days 0, 1, 2 at hour i: 10 i + (0 + 100 + 200) / 3.
            assert!(
                (p.hours[i] - (10.0 * i as f64 + 100.0)).abs() < 1e-9,
                "hour {i}: {}",
                p.hours[i]
            );
        }
        for i in 24..48 {
            // Only days 1 and 2 (k = 2, 3): 10 (i − 24) + 150.
            let want = 10.0 * (i - 24) as f64 + 150.0;
            assert!((p.hours[i] - want).abs() < 1e-9, "hour {i}: {}", p.hours[i]);
        }
        // One period: only the last day counts.
        let p = SupplyProfile::from_history(&three_days(), now(), hours(24), 1, hours(24)).unwrap();
        assert_eq!(p.hours[5], 250.0);
        // A period of 12 h: hour 0 ahead is 12 h and 24 h ago (hours 12 and 0 of day 2).
        let p = SupplyProfile::from_history(&three_days(), now(), hours(12), 2, hours(2)).unwrap();
        assert_eq!(p.hours, vec![(320.0 + 200.0) / 2.0, (330.0 + 210.0) / 2.0]);
        // Horizon rounds up to whole hours.
        let p = SupplyProfile::from_history(
            &three_days(),
            now(),
            hours(24),
            3,
            Duration::from_secs(5400),
        )
        .unwrap();
        assert_eq!(p.hours.len(), 2);
        assert_eq!(p.horizon(), hours(2));
    }

    /// Issue #27: the nearest sample within ±30 min counts; unsorted input gives the same profile.
    #[test]
    fn profile_takes_the_nearest_sample_within_half_an_hour() {
        // One sample a day before now, off by some minutes; one hour ahead wanted.
        let one = |minutes: i64| {
            let t = now() - chrono::Duration::hours(24) + chrono::Duration::minutes(minutes);
            SupplyProfile::from_history(&[(t, 7.0)], now(), hours(24), 1, hours(1))
        };
        assert_eq!(one(-30), Some(profile(&[7.0])));
        assert_eq!(one(29), Some(profile(&[7.0])));
        assert_eq!(one(-31), None);
        assert_eq!(one(31), None);
        // Two candidates: the nearer wins.
        let t = now() - chrono::Duration::hours(24);
        let two = [
            (t - chrono::Duration::minutes(20), 1.0),
            (t + chrono::Duration::minutes(10), 2.0),
        ];
        assert_eq!(
            SupplyProfile::from_history(&two, now(), hours(24), 1, hours(1)),
            Some(profile(&[2.0]))
        );
        let exact =
            SupplyProfile::from_history(&three_days(), now(), hours(24), 3, hours(12)).unwrap();
        let mut reversed = three_days();
        reversed.reverse();
        assert_eq!(
            SupplyProfile::from_history(&reversed, now(), hours(24), 3, hours(12)).unwrap(),
            exact
        );
    }

    /// Issue #27: an hour ahead with no sample in any period makes the profile unknown, never 0 W;
    /// a missing sample in one period only drops that period from the mean.
    #[test]
    fn profile_is_unknown_when_an_hour_has_no_sample() {
        let mut s = three_days();
        s.retain(|(t, _)| chrono::Timelike::hour(t) != 5);
        assert_eq!(
            SupplyProfile::from_history(&s, now(), hours(24), 3, hours(24)),
            None
        );
        // Hour 5 ahead known only from day 0 (value 50): that is the mean.
        let mut s = three_days();
        s.retain(|(t, _)| {
            !(chrono::Timelike::hour(t) == 5
                && (*t - (now() - chrono::Duration::hours(72))).num_hours() >= 24)
        });
        let p = SupplyProfile::from_history(&s, now(), hours(24), 3, hours(24)).unwrap();
        assert_eq!(p.hours[5], 50.0);
        // NaN samples are no data.
        let mut s = three_days();
        for x in &mut s {
            if chrono::Timelike::hour(&x.0) == 7 {
                x.1 = f64::NAN;
            }
        }
        assert_eq!(
            SupplyProfile::from_history(&s, now(), hours(24), 3, hours(24)),
            None
        );
        assert_eq!(
            SupplyProfile::from_history(&three_days(), now(), Duration::ZERO, 3, hours(24)),
            None
        );
        assert_eq!(
            SupplyProfile::from_history(&three_days(), now(), hours(24), 3, Duration::ZERO),
            None
        );
        assert_eq!(
            SupplyProfile::from_history(&[], now(), hours(24), 3, hours(24)),
            None
        );
    }

    /// Constant supply below the draw: (100 − 10) Wh at 10 W net is 9 h; no recharge.
    #[test]
    fn constant_supply_drains_linearly() {
        let p = profile(&[5.0; 48]);
        let f = forecast(&input(&p, 100.0, 1000.0, 10.0, 15.0));
        assert_eq!(
            f,
            Forecast {
                runway: Some(hours(9)),
                recharge: None
            }
        );
        assert!(below_recharge(&f));
        // Supply above the draw: recharge now, no runway.
        let f = forecast(&input(&p, 100.0, 1000.0, 10.0, 4.0));
        assert_eq!(
            f,
            Forecast {
                runway: None,
                recharge: Some(Duration::ZERO)
            }
        );
        assert!(!below_recharge(&f));
    }

    /// A night then a sunrise: 10 h of 0 W then 100 W; 200 Wh with a 100 Wh reserve at 20 W
    /// lasts 5 h, the sun comes at 10 h. To last until 11 h (margin 1 h) the draw must be at most
    /// 100 Wh / 11 h = 9.0909 W: 10.909 W less.
    #[test]
    fn a_night_then_a_sunrise() {
        let mut h = vec![0.0; 10];
        h.extend([100.0; 14]);
        let p = profile(&h);
        let i = input(&p, 200.0, 1000.0, 100.0, 20.0);
        let f = forecast(&i);
        assert_eq!(
            f,
            Forecast {
                runway: Some(hours(5)),
                recharge: Some(hours(10))
            }
        );
        assert!(below_recharge(&f));
        let Need::Watts(s) = savings_needed(&i, hours(1)) else {
            panic!()
        };
        let want = 20.0 - 100.0 / 11.0;
        assert!(
            s >= want && s <= want + SAVINGS_TOLERANCE_W,
            "{s} vs {want}"
        );
        assert!(reaches(&i.at_draw(20.0 - s), hours(1)));
        assert!(!reaches(&i.at_draw(20.0 - want + 0.01), hours(1)));
        // At 8 W the battery lasts 12.5 h: enough.
        assert_eq!(savings_needed(&i.at_draw(8.0), hours(1)), Need::Enough);
        assert!(!below_recharge(&forecast(&i.at_draw(8.0))));
        // Crossing inside an hour: 100 Wh at 30 W is 3 h 20 min.
        let f = forecast(&i.at_draw(30.0));
        assert_eq!(f.runway, Some(Duration::from_secs(3 * H + 1200)));
    }

    /// The level never exceeds the capacity: a full battery in the sun stays full, so 10 Wh at
    /// 10 W after 2 h of sun lasts 1 h more, not 1 h plus the 2 h of surplus.
    #[test]
    fn capacity_clamps_the_level() {
        let p = profile(&[100.0, 100.0, 0.0, 0.0, 0.0]);
        let f = forecast(&input(&p, 10.0, 10.0, 0.0, 10.0));
        assert_eq!(
            f,
            Forecast {
                runway: Some(hours(3)),
                recharge: Some(Duration::ZERO)
            }
        );
        // Without a capacity the surplus is kept: 10 + 180 Wh at 10 W.
        let mut i = input(&p, 10.0, 10.0, 0.0, 10.0);
        i.capacity_j = None;
        assert_eq!(forecast(&i).runway, None);
    }

    /// At the reserve already: runway 0 at night (nothing helps: Impossible); charging now, the
    /// battery is leaving its reserve, so there is no runway end now and no need.
    #[test]
    fn reserve_already_reached() {
        let night = profile(&[0.0, 0.0, 0.0, 50.0]);
        let i = input(&night, 10.0, 100.0, 10.0, 5.0);
        let f = forecast(&i);
        assert_eq!(
            f,
            Forecast {
                runway: Some(Duration::ZERO),
                recharge: Some(hours(3))
            }
        );
        assert!(below_recharge(&f));
        assert_eq!(savings_needed(&i, hours(1)), Need::Impossible);
        let day = profile(&[50.0, 50.0, 0.0]);
        let i = input(&day, 5.0, 100.0, 10.0, 5.0);
        let f = forecast(&i);
        assert_eq!(f.recharge, Some(Duration::ZERO));
        assert!(!below_recharge(&f));
        assert_eq!(savings_needed(&i, hours(1)), Need::Enough);
    }

    /// Recharge now: `Some(0)`; a runway beyond the horizon: `None`, which reaches any margin.
    #[test]
    fn recharge_now_and_beyond_the_horizon() {
        let p = profile(&[30.0, 0.0]);
        let i = input(&p, 500.0, 1000.0, 0.0, 20.0);
        assert_eq!(
            forecast(&i),
            Forecast {
                runway: None,
                recharge: Some(Duration::ZERO)
            }
        );
        assert!(reaches(&i, hours(100)));
        // No recharge within the horizon and the runway within it: not enough; beyond: enough.
        let p = profile(&[0.0; 4]);
        assert!(!reaches(
            &input(&p, 50.0, 1000.0, 0.0, 20.0),
            Duration::ZERO
        ));
        assert!(reaches(
            &input(&p, 500.0, 1000.0, 0.0, 20.0),
            Duration::ZERO
        ));
        assert!(!below_recharge(&forecast(&input(
            &p, 500.0, 1000.0, 0.0, 20.0
        ))));
    }

    /// The input from a target's signals: capacity from the state of charge when not measured,
    /// the reserve as a share of it, the target's draw else the battery's; unknown → none.
    #[test]
    fn input_from_signals() {
        let p = profile(&[0.0]);
        let s = TargetSignals {
            battery_ratio: Some(0.5),
            battery_energy_joules: Some(1000.0),
            battery_draw_watts: Some(3.0),
            ..Default::default()
        };
        let i = ForecastInput::of(&s, 10.0, &p).unwrap();
        assert_eq!(
            (i.energy_j, i.capacity_j, i.reserve_j, i.draw_w),
            (1000.0, Some(2000.0), 200.0, 3.0)
        );
        let s2 = TargetSignals {
            watts: Some(7.0),
            battery_capacity_joules: Some(4000.0),
            ..s
        };
        let i = ForecastInput::of(&s2, 10.0, &p).unwrap();
        assert_eq!(
            (i.capacity_j, i.reserve_j, i.draw_w),
            (Some(4000.0), 400.0, 7.0)
        );
        assert!(ForecastInput::of(
            &TargetSignals {
                battery_energy_joules: None,
                ..s
            },
            10.0,
            &p
        )
        .is_none());
        assert!(ForecastInput::of(
            &TargetSignals {
                battery_ratio: None,
                ..s
            },
            10.0,
            &p
        )
        .is_none());
        assert!(ForecastInput::of(
            &TargetSignals {
                battery_draw_watts: None,
                ..s
            },
            10.0,
            &p
        )
        .is_none());
        assert!(ForecastInput::of(
            &TargetSignals {
                battery_draw_watts: Some(f64::NAN),
                ..s
            },
            10.0,
            &p
        )
        .is_none());
    }

    fn arb_case() -> impl Strategy<Value = (Vec<f64>, f64, f64, f64, f64, f64)> {
        (
            prop::collection::vec(prop_oneof![Just(0.0), 0.0..200.0f64], 1..48),
            0.0..2000.0f64,
            1.0..2000.0f64,
            0.0..0.9f64,
            0.0..150.0f64,
            0.0..150.0f64,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Issue #27: a lower draw never gives a shorter runway or a later recharge.
        #[test]
        fn prop_lower_draw_never_shortens_the_runway((h, e, cap, reserve, d1, d2) in arb_case()) {
            let p = profile(&h);
            let (lo, hi) = (d1.min(d2), d1.max(d2));
            let base = input(&p, e, cap, reserve * cap, hi);
            let (a, b) = (forecast(&base.at_draw(lo)), forecast(&base));
            let inf = |d: Option<Duration>| d.unwrap_or(Duration::MAX);
            prop_assert!(inf(a.runway) >= inf(b.runway), "{a:?} {b:?}");
            prop_assert!(inf(a.recharge) <= inf(b.recharge), "{a:?} {b:?}");
        }

        /// `reaches` is what its definition says, checked against the forecast and a plain walk
        /// of the level; `savings_needed` is the least reduction (within its tolerance) at which
        /// it holds; at margin 0 it is the negation of `below_recharge`.
        #[test]
        fn prop_reaches_and_savings_agree_with_the_forecast((h, e, cap, reserve, d, m) in arb_case()) {
            let p = profile(&h);
            let i = input(&p, e, cap, reserve * cap, d);
            let margin = Duration::from_secs_f64(m * 60.0);
            let f = forecast(&i);
            // The level at the start of hour `n`, by a plain walk.
            let level = |n: usize| {
                let mut l = i.energy_j.min(cap * 3600.0);
                for s in &h[..n] {
                    l = (l + (s - d) * 3600.0).clamp(0.0, cap * 3600.0);
                }
                l
            };
            let end = f.recharge.map_or(h.len(), |c| (c.as_secs() / H) as usize);
            let verdict = f.recharge == Some(Duration::ZERO)
                || (f.runway.is_none_or(|r| r >= hours(end as u64))
                    && level(end) - i.reserve_j >= margin.as_secs_f64() * d);
            prop_assert_eq!(reaches(&i, margin), verdict, "{:?}", f);
            prop_assert_eq!(reaches(&i, Duration::ZERO), !below_recharge(&f), "{:?}", f);
            match savings_needed(&i, margin) {
                Need::Enough => prop_assert!(verdict),
                Need::Impossible => prop_assert!(!verdict && !reaches(&i.at_draw(0.0), margin)),
                Need::Watts(s) => {
                    prop_assert!(!verdict && s > 0.0 && s <= d);
                    prop_assert!(reaches(&i.at_draw(d - s), margin));
                    prop_assert!(!reaches(&i.at_draw(d - (s - SAVINGS_TOLERANCE_W).max(0.0)), margin));
                }
            }
        }
    }
}
