//! Platform power from this node's BMC over IPMI, for servers with a BMC but no Redfish.
//!
//! - Where: in-band through the kernel's IPMI device (`--ipmi-device /dev/ipmi0`; modules
//!   `ipmi_devintf` and `ipmi_si`), or out-of-band over LAN (`--ipmi-host`, RMCP+ where the BMC
//!   offers it, else an IPMI 1.5 session) with `user:password` from a file, like Redfish.
//! - What: DCMI Get Power Reading (the BMC's own whole-node figure) where the BMC answers it with
//!   an active measurement, and DCMI Get Power Limit as the node's budget when a limit is active;
//!   else the SDR's watt sensors ([`sensors`]: "Pwr Consumption", else the supplies' input power
//!   summed). Which one is said in `top` and the logs.
//! - How: a BMC answers in milliseconds in-band and up to seconds over LAN, so polling runs on its
//!   own thread and the collector only takes the latest reading; a reading older than three poll
//!   intervals is stale (the series go away and the next source, the estimator last, takes over).
//!   The SDR is read once and again hourly or after an error; each poll then reads only the chosen
//!   sensors. A link that fails is dropped and opened again on the next poll.

pub mod bmc;
pub mod dcmi;
pub mod sensors;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use self::bmc::{CallError, Link, PowerSensor};
use crate::source::{Context, Domain, Meter, MeterValue, Sample, Source, SourceError};

/// How often the SDR is read again (and DCMI asked again) while polls succeed.
const REPLAN: Duration = Duration::from_secs(3600);

/// Which BMC.
#[derive(Debug, Clone)]
pub enum Target {
    /// The kernel's IPMI device, e.g. `/dev/ipmi0`.
    Device(PathBuf),
    /// A BMC on the network: `host` or `host:port` (623 by default).
    Lan {
        host: String,
        /// `user:password` file; else `EDGEWATT_IPMI_USERNAME`/`EDGEWATT_IPMI_PASSWORD`.
        credentials_file: Option<PathBuf>,
    },
}

#[derive(Debug, Clone)]
pub struct IpmiConfig {
    pub target: Target,
    /// Poll interval.
    pub interval: Duration,
    /// Timeout of one request.
    pub timeout: Duration,
    /// `--ipmi-sensor`: read this SDR sensor instead of choosing (and instead of DCMI).
    pub sensor: Option<String>,
}

/// How the node's power was read; said in `top` and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Dcmi,
    Sdr,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Dcmi => "dcmi",
            Method::Sdr => "sdr",
        }
    }
}

/// What one poll found.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub watts: f64,
    pub budget_watts: Option<f64>,
    pub method: Method,
    pub detail: String,
}

/// Why a poll has no node power.
#[derive(Debug, Clone, PartialEq)]
pub enum PollError {
    /// No link or no answer: the last reading stands until stale.
    Unreachable(String),
    /// The BMC answered but has no power figure for this node.
    NoPower(String),
}

fn credentials(file: Option<&PathBuf>) -> anyhow::Result<(String, String)> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("IPMI credentials {}: {e}", path.display()))?;
        let (u, p) = text
            .trim_end_matches(['\n', '\r'])
            .split_once(':')
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "IPMI credentials {}: expected user:password",
                    path.display()
                )
            })?;
        return Ok((u.to_string(), p.to_string()));
    }
    match (
        std::env::var("EDGEWATT_IPMI_USERNAME"),
        std::env::var("EDGEWATT_IPMI_PASSWORD"),
    ) {
        (Ok(u), Ok(p)) => Ok((u, p)),
        _ => anyhow::bail!("--ipmi-host needs --ipmi-credentials-file (user:password) or EDGEWATT_IPMI_USERNAME and EDGEWATT_IPMI_PASSWORD"),
    }
}

/// `host` → `host:623`; `host:port` and `[v6]:port` are kept.
fn with_port(host: &str) -> String {
    let bare_v6 = host.matches(':').count() > 1 && !host.starts_with('[');
    if bare_v6 {
        format!("[{host}]:623")
    } else if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_string()
    } else {
        format!("{host}:623")
    }
}

/// How to open the link, resolved once at start (credentials are read then).
enum Opener {
    Device(PathBuf),
    Lan {
        addr: String,
        user: String,
        password: String,
    },
}

/// What the BMC has, learnt on the first poll and again after [`REPLAN`] or an error.
#[derive(Default)]
struct Plan {
    /// `Some(why)` once DCMI power reading is known not to work on this BMC.
    no_dcmi: Option<String>,
    sensors: Option<Vec<PowerSensor>>,
    chosen: Option<Result<sensors::Choice, String>>,
    at: Option<Instant>,
}

struct Poller {
    opener: Opener,
    timeout: Duration,
    wanted: Option<String>,
    link: Option<Link>,
    plan: Plan,
}

impl Poller {
    fn link(&mut self) -> Result<&mut Link, PollError> {
        if self.link.is_none() {
            let link = match &self.opener {
                Opener::Device(p) => Link::device(p, self.timeout),
                Opener::Lan {
                    addr,
                    user,
                    password,
                } => Link::lan(addr, user, password, self.timeout),
            }
            .map_err(PollError::Unreachable)?;
            self.link = Some(link);
        }
        Ok(self.link.as_mut().expect("just set"))
    }

    /// One poll; a link error drops the link and the plan (both are rebuilt next time).
    fn poll(&mut self) -> Result<Reading, PollError> {
        if self.plan.at.is_none_or(|at| at.elapsed() > REPLAN) {
            self.plan = Plan {
                at: Some(Instant::now()),
                ..Plan::default()
            };
        }
        let r = self.read();
        if matches!(r, Err(PollError::Unreachable(_))) {
            self.link = None;
            self.plan = Plan::default();
        }
        r
    }

    fn read(&mut self) -> Result<Reading, PollError> {
        if self.wanted.is_none() && self.plan.no_dcmi.is_none() {
            match self.dcmi() {
                Ok(r) => return Ok(r),
                Err(DcmiError::Link(e)) => return Err(PollError::Unreachable(e)),
                Err(DcmiError::Unsupported(why)) => {
                    tracing::info!(reason = %why, "IPMI: no DCMI power reading; using the SDR's power sensors");
                    self.plan.no_dcmi = Some(why);
                }
            }
        }
        self.sdr()
    }

    fn dcmi(&mut self) -> Result<Reading, DcmiError> {
        let link = self.link().map_err(|e| match e {
            PollError::Unreachable(e) | PollError::NoPower(e) => DcmiError::Link(e),
        })?;
        dcmi_power(|cmd, data| link.raw(dcmi::NETFN_GROUP_EXTENSION, cmd, data))
    }

    fn sdr(&mut self) -> Result<Reading, PollError> {
        let wanted = self.wanted.clone();
        if self.plan.sensors.is_none() {
            let found = self.link()?.power_sensors().map_err(link_or_no_power)?;
            let cands: Vec<_> = found.iter().map(|s| s.candidate.clone()).collect();
            let chosen = sensors::choose(&cands, wanted.as_deref());
            match &chosen {
                Ok(c) => tracing::info!(sensors = %c.what, "IPMI: node power from the SDR"),
                Err(e) => tracing::warn!(reason = %e, "IPMI: no power sensor for this node"),
            }
            self.plan.sensors = Some(found);
            self.plan.chosen = Some(chosen);
        }
        let choice = match self.plan.chosen.clone() {
            Some(Ok(c)) => c,
            Some(Err(e)) => return Err(PollError::NoPower(e)),
            None => return Err(PollError::NoPower("SDR not read".into())),
        };
        let picked: Vec<PowerSensor> = {
            let all = self.plan.sensors.as_deref().unwrap_or_default();
            choice.sensors.iter().map(|&i| all[i].clone()).collect()
        };
        let link = self.link()?;
        let mut watts = 0.0;
        for s in &picked {
            match link.read(s).map_err(link_or_no_power)? {
                Some(w) => watts += w,
                None => {
                    return Err(PollError::NoPower(format!(
                        "IPMI sensor \"{}\": reading unavailable",
                        s.candidate.name
                    )))
                }
            }
        }
        Ok(Reading {
            watts,
            budget_watts: None,
            method: Method::Sdr,
            detail: choice.what,
        })
    }
}

#[derive(Debug, PartialEq)]
enum DcmiError {
    Link(String),
    Unsupported(String),
}

/// The node's power and budget from DCMI, asking through `ask` (a DCMI command and its request
/// data → the response data after a 00h completion code). Any refusal or an inactive
/// measurement means this BMC has no DCMI power (the SDR is used); a link error is the link's.
fn dcmi_power(
    mut ask: impl FnMut(u8, Vec<u8>) -> Result<Vec<u8>, CallError>,
) -> Result<Reading, DcmiError> {
    let data =
        ask(dcmi::CMD_GET_POWER_READING, dcmi::power_reading_request()).map_err(|e| match e {
            CallError::Link(e) => DcmiError::Link(e),
            other => DcmiError::Unsupported(format!("DCMI Get Power Reading: {other}")),
        })?;
    let r = dcmi::decode_power_reading(&data)
        .map_err(|e| DcmiError::Unsupported(format!("DCMI Get Power Reading: {e}")))?;
    if !r.active {
        return Err(DcmiError::Unsupported(
            "DCMI Get Power Reading: the BMC is not measuring power (state bit 6 clear)".into(),
        ));
    }
    let limit = match ask(dcmi::CMD_GET_POWER_LIMIT, dcmi::power_limit_request()) {
        Ok(d) => dcmi::decode_power_limit(&d).ok().filter(|&w| w > 0),
        Err(CallError::Link(e)) => return Err(DcmiError::Link(e)),
        // 80h: no active limit; anything else: the BMC has no power capping.
        Err(_) => None,
    };
    Ok(Reading {
        watts: r.current_watts as f64,
        budget_watts: limit.map(f64::from),
        method: Method::Dcmi,
        detail: format!(
            "DCMI power reading (now {} W, average {} W over {} s{})",
            r.current_watts,
            r.average_watts,
            r.period_ms / 1000,
            limit
                .map(|l| format!("; active power limit {l} W"))
                .unwrap_or_default()
        ),
    })
}

fn link_or_no_power(e: CallError) -> PollError {
    match e {
        CallError::Link(e) => PollError::Unreachable(e),
        other => PollError::NoPower(format!("IPMI: {other}")),
    }
}

#[derive(Default)]
struct Shared {
    /// The last answer of the BMC (a reading, or why it has none) and when.
    latest: Option<(Instant, Result<Reading, String>)>,
    /// Why the last poll could not reach the BMC.
    error: Option<String>,
}

pub struct IpmiSource {
    shared: Arc<Mutex<Shared>>,
    max_age: Duration,
}

impl IpmiSource {
    /// Starts the background poller. Fails only on configuration errors (unreadable
    /// credentials); an unreachable BMC is a down source, reported every interval.
    pub fn start(cfg: IpmiConfig) -> anyhow::Result<Self> {
        let opener = match &cfg.target {
            Target::Device(p) => Opener::Device(p.clone()),
            Target::Lan {
                host,
                credentials_file,
            } => {
                let (user, password) = credentials(credentials_file.as_ref())?;
                Opener::Lan {
                    addr: with_port(host),
                    user,
                    password,
                }
            }
        };
        let mut poller = Poller {
            opener,
            timeout: cfg.timeout,
            wanted: cfg.sensor.clone(),
            link: None,
            plan: Plan::default(),
        };
        let shared = Arc::new(Mutex::new(Shared::default()));
        let bg = shared.clone();
        let interval = cfg.interval;
        std::thread::Builder::new()
            .name("ipmi".into())
            .spawn(move || {
                let mut last_method = None;
                loop {
                    let started = Instant::now();
                    let r = poller.poll();
                    tracing::debug!(ms = started.elapsed().as_secs_f64() * 1e3, ok = r.is_ok(), "IPMI poll");
                    if let Ok(r) = &r {
                        if last_method != Some(r.method) {
                            tracing::info!(method = r.method.as_str(), detail = %r.detail, "IPMI: platform power");
                            last_method = Some(r.method);
                        }
                    }
                    if let Ok(mut s) = bg.lock() {
                        match r {
                            Err(PollError::Unreachable(e)) => s.error = Some(e),
                            Err(PollError::NoPower(e)) => {
                                s.error = None;
                                s.latest = Some((Instant::now(), Err(e)));
                            }
                            Ok(r) => {
                                s.error = None;
                                s.latest = Some((Instant::now(), Ok(r)));
                            }
                        }
                    }
                    std::thread::sleep(interval.saturating_sub(started.elapsed()));
                }
            })?;
        Ok(Self {
            shared,
            max_age: cfg.interval * 3,
        })
    }
}

impl Source for IpmiSource {
    fn name(&self) -> &'static str {
        "ipmi"
    }

    fn sample(&mut self, ctx: &Context) -> Result<Sample, SourceError> {
        let s = self
            .shared
            .lock()
            .map_err(|_| SourceError::Other("IPMI poller panicked".into()))?;
        let (_, r) =
            crate::source::fresh_reading(&s.latest, s.error.as_ref(), ctx.now, self.max_age)?;
        let r = r.as_ref().map_err(|e| SourceError::NoPower(e.clone()))?;
        Ok(Sample {
            meters: vec![Meter {
                domain: Domain::Platform,
                zone: "platform".into(),
                value: MeterValue::Watts(r.watts),
            }],
            budget_watts: r.budget_watts,
            detail: Some(format!("{}: {}", r.method.as_str(), r.detail)),
            ..Sample::default()
        })
    }

    fn info(&self) -> Option<Vec<(&'static str, String)>> {
        let s = self.shared.lock().ok()?;
        let method = match &s.latest {
            Some((_, Ok(r))) => r.method.as_str(),
            _ => "none",
        };
        Some(vec![("method", method.to_string())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::dcmi::tests::{LIMIT, READING};

    fn refused(cc: u8) -> CallError {
        CallError::Refused(Some(cc), format!("completion code {cc:#04x}"))
    }

    /// A BMC answering the two DCMI commands with `reading` and `limit`; checks the requests.
    fn bmc(
        reading: Result<Vec<u8>, CallError>,
        limit: Result<Vec<u8>, CallError>,
    ) -> impl FnMut(u8, Vec<u8>) -> Result<Vec<u8>, CallError> {
        move |cmd, data| match cmd {
            0x02 => {
                assert_eq!(data, [0xDC, 0x01, 0x00, 0x00]);
                reading.clone()
            }
            0x03 => {
                assert_eq!(data, [0xDC, 0x00, 0x00]);
                limit.clone()
            }
            other => panic!("unexpected DCMI command {other:#04x}"),
        }
    }

    #[test]
    fn dcmi_power_with_an_active_limit_is_power_and_budget() {
        let r = dcmi_power(bmc(Ok(READING.to_vec()), Ok(LIMIT.to_vec()))).unwrap();
        assert_eq!(r.watts, 245.0);
        assert_eq!(r.budget_watts, Some(450.0));
        assert_eq!(r.method, Method::Dcmi);
        assert!(r.detail.contains("average 240 W over 60 s"), "{}", r.detail);
    }

    #[test]
    fn no_active_limit_is_no_budget() {
        // 80h "No Active Set Power Limit"; C1h: a BMC without power capping.
        for cc in [0x80, 0xC1] {
            let r = dcmi_power(bmc(Ok(READING.to_vec()), Err(refused(cc)))).unwrap();
            assert_eq!((r.watts, r.budget_watts), (245.0, None));
        }
        let mut zero = LIMIT;
        zero[4] = 0;
        zero[5] = 0;
        let r = dcmi_power(bmc(Ok(READING.to_vec()), Ok(zero.to_vec()))).unwrap();
        assert_eq!(r.budget_watts, None);
    }

    #[test]
    fn no_dcmi_or_no_measurement_falls_back_but_a_link_error_does_not() {
        // C1h invalid command (ipmi_sim, BMCs without DCMI), D4h insufficient privilege
        for cc in [0xC1, 0xD4] {
            let e = dcmi_power(bmc(Err(refused(cc)), Ok(LIMIT.to_vec()))).unwrap_err();
            assert!(matches!(e, DcmiError::Unsupported(_)), "{e:?}");
        }
        let mut inactive = READING;
        inactive[17] = 0;
        let e = dcmi_power(bmc(Ok(inactive.to_vec()), Ok(LIMIT.to_vec()))).unwrap_err();
        assert!(
            matches!(&e, DcmiError::Unsupported(w) if w.contains("not measuring")),
            "{e:?}"
        );
        let e = dcmi_power(bmc(Ok(READING[..10].to_vec()), Ok(LIMIT.to_vec()))).unwrap_err();
        assert!(matches!(e, DcmiError::Unsupported(_)), "{e:?}");
        let e = dcmi_power(bmc(
            Err(CallError::Link("timeout".into())),
            Ok(LIMIT.to_vec()),
        ))
        .unwrap_err();
        assert_eq!(e, DcmiError::Link("timeout".into()));
        let e = dcmi_power(bmc(
            Ok(READING.to_vec()),
            Err(CallError::Link("gone".into())),
        ))
        .unwrap_err();
        assert_eq!(e, DcmiError::Link("gone".into()));
    }

    #[test]
    fn the_default_port_is_623() {
        assert_eq!(with_port("10.0.0.5"), "10.0.0.5:623");
        assert_eq!(with_port("bmc.example"), "bmc.example:623");
        assert_eq!(with_port("127.0.0.1:9001"), "127.0.0.1:9001");
        assert_eq!(with_port("fd00::5"), "[fd00::5]:623");
        assert_eq!(with_port("[fd00::5]:700"), "[fd00::5]:700");
    }
}
