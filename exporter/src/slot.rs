//! One source as the collection loop holds it: the source, and what its last sample said about it
//! (up or down and why, in use or standby) — the `exporter_source_up` series and `top`'s warnings.
//! State changes are logged once, not every interval.

use crate::snapshot::SourceStatus;
use crate::source::{Sample, Source, SourceError};

pub struct Slot {
    pub source: Box<dyn Source>,
    pub status: SourceStatus,
    /// The source handed over something besides meters this interval (battery, budget, shared).
    published: bool,
}

impl Slot {
    pub fn new(source: Box<dyn Source>) -> Self {
        Self {
            status: SourceStatus {
                name: source.name(),
                up: false,
                state: "error",
                reason: Some("not read yet".into()),
                detail: None,
            },
            source,
            published: false,
        }
    }

    /// Takes this interval's sample: the status follows it; the sample comes back when it is one.
    pub fn took(&mut self, sampled: Result<Sample, SourceError>) -> Option<Sample> {
        let name = self.status.name;
        match sampled {
            Ok(mut sample) => {
                if !self.status.up {
                    tracing::info!(source = name, "source up");
                }
                self.status.up = true;
                self.status.reason = None;
                if let Some(detail) = sample.detail.take() {
                    self.status.detail = Some(detail);
                }
                self.published = sample.battery.is_some()
                    || sample.external_power.is_some()
                    || sample.budget_watts.is_some()
                    || !sample.shared.is_empty();
                Some(sample)
            }
            Err(e) => {
                let reason = e.to_string();
                if self.status.up || self.status.reason.as_deref() != Some(reason.as_str()) {
                    tracing::warn!(source = name, %reason, "source down; its series are withdrawn");
                }
                self.published = false;
                self.status.up = false;
                self.status.state = e.state();
                self.status.reason = Some(reason);
                None
            }
        }
    }

    /// Once meters are selected: a source that is up is `in_use` when something it handed over
    /// is published (`meter_selected`: one of its meters won its zone), else `standby`.
    pub fn settle(&mut self, meter_selected: bool) {
        if self.status.up {
            let in_use = self.published || meter_selected;
            self.status.state = if in_use { "in_use" } else { "standby" };
        }
    }
}

/// `name (reason)` of every source that is down, for the fallback log line.
pub fn down(slots: &[Slot]) -> String {
    let down: Vec<String> = slots
        .iter()
        .filter(|s| !s.status.up)
        .map(|s| {
            format!(
                "{} ({})",
                s.status.name,
                s.status.reason.as_deref().unwrap_or("down")
            )
        })
        .collect();
    down.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Battery, Context};

    struct Named;
    impl Source for Named {
        fn name(&self) -> &'static str {
            "redfish"
        }
        fn sample(&mut self, _: &Context) -> Result<Sample, SourceError> {
            unreachable!("the slot is fed samples directly")
        }
    }

    #[test]
    fn status_follows_the_samples_and_the_selection() {
        let mut s = Slot::new(Box::new(Named));
        assert_eq!((s.status.up, s.status.state), (false, "error"));
        assert_eq!(s.status.reason.as_deref(), Some("not read yet"));
        let detail = Sample {
            detail: Some("Chassis/1 PowerSubsystem".into()),
            ..Sample::default()
        };
        assert!(s.took(Ok(detail)).is_some());
        s.settle(false);
        assert_eq!((s.status.up, s.status.state), (true, "standby"));
        assert_eq!(s.status.reason, None);
        s.settle(true);
        assert_eq!(s.status.state, "in_use");
        // down: the reason and the error's state; the last detail is kept for `top`
        let stale = SourceError::Stale("last BMC reading is 9s old".into());
        assert!(s.took(Err(stale)).is_none());
        s.settle(true);
        assert_eq!((s.status.up, s.status.state), (false, "stale"));
        assert_eq!(
            s.status.reason.as_deref(),
            Some("last BMC reading is 9s old")
        );
        assert_eq!(s.status.detail.as_deref(), Some("Chassis/1 PowerSubsystem"));
        assert_eq!(
            down(std::slice::from_ref(&s)),
            "redfish (last BMC reading is 9s old)"
        );
        // a battery is published by itself: in use without a selected meter
        let battery = Sample {
            battery: Some(Battery::default()),
            ..Sample::default()
        };
        assert!(s.took(Ok(battery)).is_some());
        s.settle(false);
        assert_eq!(s.status.state, "in_use");
        assert_eq!(s.status.detail.as_deref(), Some("Chassis/1 PowerSubsystem"));
    }
}
