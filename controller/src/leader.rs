//! Leader election on a `coordination.k8s.io/v1` Lease, and the [`Fence`] every write checks.
//!
//! Follows client-go's `tools/leaderelection/leaderelection.go`:
//! - The holder renews every `retry_period`; when it has not renewed for `renew_deadline` it
//!   stops leading — and [`Fence::check`] refuses every write from that instant on, whether or
//!   not the renew request ever comes back (a hung or partitioned leader stops by itself).
//! - A candidate takes an expired Lease only after it has *seen the record unchanged* for the
//!   record's `leaseDurationSeconds`, measured on its own monotonic clock from when it observed
//!   the record. `renewTime` is compared for change, never with the local clock, so clock skew
//!   between nodes does not matter (only their clock *rates*).
//! - `renew_deadline < lease_duration`: the old leader stops writing (at its last successful
//!   renew + `renew_deadline`) before anyone may take over (that renew + `lease_duration` at the
//!   earliest); writes are also cut off at the deadline by a timeout (see [`Fence::guard`]).
//! - Every gain of leadership starts a new *term*: the runtime reloads its history from the
//!   cluster instead of trusting what it remembered from an earlier term.
//! - On SIGTERM the holder releases the Lease (holder cleared, `leaseDurationSeconds: 1`) after
//!   it stopped writing, so a standby takes over at once (client-go's `ReleaseOnCancel`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    api::{Patch, PatchParams, PostParams},
    Api, Client,
};
use serde_json::json;
use tokio::time::Instant;

/// Lease settings (client-go's defaults: 15 s / 10 s / 2 s).
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// client-go's jitter factor for candidates' retries.
const JITTER: f64 = 1.2;

impl LeaseConfig {
    /// The same checks as client-go's `NewLeaderElector`.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_duration <= self.renew_deadline {
            return Err("--lease-duration must be greater than --renew-deadline".into());
        }
        if self.renew_deadline.as_secs_f64() <= JITTER * self.retry_period.as_secs_f64() {
            return Err("--renew-deadline must be greater than 1.2 × --retry-period".into());
        }
        if self.retry_period.is_zero() || self.identity.is_empty() {
            return Err("--retry-period and the identity must not be empty".into());
        }
        Ok(())
    }
}

/// A write was refused: leadership is not confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not the leader (Lease not renewed within the renew deadline)")]
pub struct NotLeader;

/// Leadership as the runtime sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leadership {
    pub leading: bool,
    /// Increments on every gain of leadership.
    pub term: u64,
}

#[derive(Debug)]
struct FenceState {
    until: Option<Instant>,
    term: u64,
}

struct FenceInner {
    state: Mutex<FenceState>,
    tx: tokio::sync::watch::Sender<Leadership>,
}

/// Whether this replica may write now. Cheap to clone and check.
#[derive(Clone)]
pub struct Fence(Arc<FenceInner>);

impl Default for Fence {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence")
            .field("leading", &self.is_leader())
            .field("term", &self.term())
            .finish()
    }
}

impl Fence {
    /// Not leading until [`Fence::confirm`]ed.
    pub fn new() -> Self {
        let (tx, _) = tokio::sync::watch::channel(Leadership {
            leading: false,
            term: 0,
        });
        Self(Arc::new(FenceInner {
            state: Mutex::new(FenceState {
                until: None,
                term: 0,
            }),
            tx,
        }))
    }

    /// Leading for good (tests; a controller run without election).
    pub fn always() -> Self {
        let f = Self::new();
        f.confirm(Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600));
        f
    }

    fn leading_at(s: &FenceState, now: Instant) -> bool {
        s.until.is_some_and(|u| now < u)
    }

    pub fn is_leader(&self) -> bool {
        Self::leading_at(&self.0.state.lock().expect("fence lock"), Instant::now())
    }

    /// The current term if leading now.
    pub fn check(&self) -> Result<u64, NotLeader> {
        let s = self.0.state.lock().expect("fence lock");
        if Self::leading_at(&s, Instant::now()) {
            Ok(s.term)
        } else {
            Err(NotLeader)
        }
    }

    /// How long leadership is confirmed for from now.
    pub fn remaining(&self) -> Option<Duration> {
        let s = self.0.state.lock().expect("fence lock");
        let now = Instant::now();
        s.until.filter(|u| now < *u).map(|u| u - now)
    }

    pub fn term(&self) -> u64 {
        self.0.state.lock().expect("fence lock").term
    }

    /// Changes of leadership (gains and losses), for withdrawing what only a leader shows.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Leadership> {
        self.0.tx.subscribe()
    }

    /// A renew succeeded: leading until `until`. A gain starts a new term.
    pub fn confirm(&self, until: Instant) {
        let mut s = self.0.state.lock().expect("fence lock");
        if !Self::leading_at(&s, Instant::now()) {
            s.term += 1;
        }
        s.until = Some(until);
        let l = Leadership {
            leading: true,
            term: s.term,
        };
        drop(s);
        self.0.tx.send_if_modified(|old| {
            let changed = *old != l;
            *old = l;
            changed
        });
    }

    /// Leadership is lost (or given up) now.
    pub fn revoke(&self) {
        let mut s = self.0.state.lock().expect("fence lock");
        s.until = None;
        let term = s.term;
        drop(s);
        self.0.tx.send_if_modified(|old| {
            let changed = old.leading;
            *old = Leadership {
                leading: false,
                term,
            };
            changed
        });
    }

    /// Runs a write only while leading, and cuts it off when leadership ends: a request that is
    /// still in flight at the renew deadline is dropped rather than landing after a new leader
    /// may have started.
    pub async fn guard<T, E>(
        &self,
        write: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<Result<T, E>, NotLeader> {
        let left = self.remaining().ok_or(NotLeader)?;
        tokio::time::timeout(left, write)
            .await
            .map_err(|_| NotLeader)
    }
}

/// The Lease fields that identify a renew; compared for change only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Record {
    holder: String,
    renew_time: String,
    acquire_time: String,
    lease_duration_secs: i64,
    transitions: i64,
}

impl Record {
    fn of(lease: &Lease) -> Self {
        let s = lease.spec.clone().unwrap_or_default();
        let t = |t: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime>| {
            t.map(|t| t.0.to_string()).unwrap_or_default()
        };
        Self {
            holder: s.holder_identity.unwrap_or_default(),
            renew_time: t(s.renew_time),
            acquire_time: t(s.acquire_time),
            lease_duration_secs: i64::from(s.lease_duration_seconds.unwrap_or(0)),
            transitions: i64::from(s.lease_transitions.unwrap_or(0)),
        }
    }
}

/// The record as last observed, and when (local monotonic clock).
#[derive(Debug, Clone)]
struct Observed {
    record: Record,
    at: Instant,
}

/// Whether `identity` may write the Lease now: it holds it, nobody does, or the holder has not
/// changed the record for its whole `leaseDurationSeconds` as observed here.
fn may_take(observed: &Observed, identity: &str, now: Instant) -> bool {
    let r = &observed.record;
    r.holder.is_empty()
        || r.holder == identity
        || observed.at + Duration::from_secs(r.lease_duration_secs.max(0) as u64) <= now
}

fn micro(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Runs the election for one replica.
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    fence: Fence,
    observed: Option<Observed>,
}

impl Elector {
    pub fn new(client: Client, cfg: LeaseConfig, fence: Fence) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            fence,
            observed: None,
        }
    }

    fn observe(&mut self, record: Record) {
        if self.observed.as_ref().is_none_or(|o| o.record != record) {
            self.observed = Some(Observed {
                record,
                at: Instant::now(),
            });
        }
    }

    /// One attempt to acquire or renew. `Ok(true)`: we hold the Lease as of the request.
    pub async fn try_acquire_or_renew(&mut self) -> kube::Result<bool> {
        let now = chrono::Utc::now();
        let id = self.cfg.identity.clone();
        let duration = self.cfg.lease_duration.as_secs().max(1);
        let Some(lease) = self.api.get_opt(&self.cfg.name).await? else {
            let obj: Lease = serde_json::from_value(json!({
                "metadata": {"name": self.cfg.name, "namespace": self.cfg.namespace},
                "spec": {"holderIdentity": id, "leaseDurationSeconds": duration,
                    "acquireTime": micro(now), "renewTime": micro(now), "leaseTransitions": 0},
            }))
            .map_err(kube::Error::SerdeError)?;
            return match self.api.create(&PostParams::default(), &obj).await {
                Ok(l) => {
                    self.observe(Record::of(&l));
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        self.observe(Record::of(&lease));
        let observed = self.observed.clone().expect("just observed");
        if !may_take(&observed, &id, Instant::now()) {
            return Ok(false);
        }
        let ours = observed.record.holder == id;
        let spec = lease.spec.clone().unwrap_or_default();
        let acquire = if ours {
            spec.acquire_time
                .map(|t| t.0.to_string())
                .unwrap_or_else(|| micro(now))
        } else {
            micro(now)
        };
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let patch = json!({
            "metadata": {"resourceVersion": lease.metadata.resource_version},
            "spec": {"holderIdentity": id, "leaseDurationSeconds": duration,
                "acquireTime": acquire, "renewTime": micro(now), "leaseTransitions": transitions},
        });
        match self
            .api
            .patch(
                &self.cfg.name,
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
        {
            Ok(l) => {
                self.observe(Record::of(&l));
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One round: try, then update the fence. Leadership is confirmed until the request's start
    /// plus the renew deadline; an attempt still running at the current deadline loses it.
    pub async fn round(&mut self) {
        let started = Instant::now();
        let deadline = self
            .fence
            .remaining()
            .map(|r| Instant::now() + r)
            .unwrap_or(started + self.cfg.renew_deadline);
        let attempt = tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await;
        let was = self.fence.is_leader();
        match attempt {
            Ok(Ok(true)) => {
                if !was {
                    tracing::info!(lease = %self.cfg.name, identity = %self.cfg.identity, "leadership acquired");
                }
                self.fence.confirm(started + self.cfg.renew_deadline);
            }
            Ok(Ok(false)) => {
                if was {
                    tracing::warn!(lease = %self.cfg.name, "leadership lost: the Lease is held by another replica");
                }
                self.fence.revoke();
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = %self.cfg.name, "lease: {e}");
                if !self.fence.is_leader() && was {
                    tracing::warn!(lease = %self.cfg.name, "leadership lost: not renewed within the renew deadline");
                    self.fence.revoke();
                }
            }
            Err(_) => {
                if was {
                    tracing::warn!(lease = %self.cfg.name, "leadership lost: not renewed within the renew deadline");
                }
                self.fence.revoke();
            }
        }
    }

    /// Runs until `shutdown` resolves; then stops leading and releases the Lease.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            self.round().await;
            let leading = self.fence.is_leader();
            let mut pause = self.cfg.retry_period;
            if !leading {
                // Candidates spread their attempts (client-go's JitterUntil).
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0);
                pause += pause.mul_f64((JITTER - 1.0) * f64::from(nanos % 1000) / 1000.0);
            }
            let wake = Instant::now() + pause;
            // Wake at the renew deadline too, to revoke on time even between attempts.
            let deadline = self.fence.remaining().map(|r| Instant::now() + r);
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep_until(deadline.map_or(wake, |d| d.min(wake))) => {}
            }
            if leading && !self.fence.is_leader() {
                tracing::warn!(lease = %self.cfg.name, "leadership lost: not renewed within the renew deadline");
                self.fence.revoke();
            }
        }
        self.release().await;
    }

    /// Stops writing, then gives the Lease up if we hold it, so a standby need not wait.
    pub async fn release(&mut self) {
        self.fence.revoke();
        let Ok(Some(lease)) = self.api.get_opt(&self.cfg.name).await else {
            return;
        };
        if Record::of(&lease).holder != self.cfg.identity {
            return;
        }
        let now = micro(chrono::Utc::now());
        let patch = json!({
            "metadata": {"resourceVersion": lease.metadata.resource_version},
            "spec": {"holderIdentity": "", "leaseDurationSeconds": 1,
                "renewTime": now, "acquireTime": now},
        });
        match self
            .api
            .patch(
                &self.cfg.name,
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
        {
            Ok(_) => tracing::info!(lease = %self.cfg.name, "lease released"),
            Err(e) => tracing::warn!(lease = %self.cfg.name, "releasing the lease: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(holder: &str, renew: &str) -> Record {
        Record {
            holder: holder.into(),
            renew_time: renew.into(),
            lease_duration_secs: 15,
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_is_observed_change_not_clock_comparison() {
        let t0 = Instant::now();
        // The holder's renewTime is far in the past by our clock (skew): not expired, because we
        // have not yet watched it stay unchanged for 15 s.
        let o = Observed {
            record: rec("a", "2001-01-01T00:00:00.000000Z"),
            at: t0,
        };
        assert!(!may_take(&o, "b", t0 + Duration::from_secs(14)));
        assert!(may_take(&o, "b", t0 + Duration::from_secs(15)));
        assert!(may_take(&o, "a", t0), "the holder renews");
        assert!(may_take(
            &Observed {
                record: rec("", "x"),
                at: t0
            },
            "b",
            t0
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn fence_expires_at_the_deadline_and_terms_count_gains() {
        let f = Fence::new();
        assert_eq!(f.check(), Err(NotLeader));
        f.confirm(Instant::now() + Duration::from_secs(10));
        assert_eq!(f.check(), Ok(1));
        f.confirm(Instant::now() + Duration::from_secs(10));
        assert_eq!(f.term(), 1, "a renew is no new term");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!f.is_leader(), "expired without any revoke");
        assert!(f.guard(async { Ok::<_, ()>(()) }).await.is_err());
        f.confirm(Instant::now() + Duration::from_secs(10));
        assert_eq!(f.term(), 2, "regained: a new term");
        // A write still running at the deadline is cut off.
        let slow = f.guard(async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, ()>(())
        });
        assert_eq!(slow.await, Err(NotLeader));
        let mut rx = f.subscribe();
        f.confirm(Instant::now() + Duration::from_secs(10));
        f.revoke();
        assert!(!rx.borrow_and_update().leading);
    }

    #[test]
    fn config_is_checked_like_client_go() {
        let cfg = |l, r, p| LeaseConfig {
            namespace: "n".into(),
            name: "l".into(),
            identity: "a".into(),
            lease_duration: Duration::from_secs(l),
            renew_deadline: Duration::from_secs(r),
            retry_period: Duration::from_secs(p),
        };
        assert!(cfg(15, 10, 2).validate().is_ok());
        assert!(cfg(10, 10, 2).validate().is_err());
        assert!(cfg(15, 2, 2).validate().is_err());
    }
}
