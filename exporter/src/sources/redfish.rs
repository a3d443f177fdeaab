//! Platform power from a BMC over Redfish: `EnvironmentMetrics` (`PowerWatts`, `EnergykWh`,
//! `PowerLimitWatts`) where the service has it, else the legacy `Power` resource
//! (`PowerControl[].PowerConsumedWatts`, `PowerLimit.LimitInWatts`).
//!
//! BMCs answer in hundreds of milliseconds to seconds, so polling runs on its own thread at its
//! own interval and the collector only takes the latest reading; a reading older than three poll
//! intervals counts as down. Only the first chassis that reports power is used: enclosures list
//! blades as further chassis, and adding them would count the same watts twice.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::source::{Context, Domain, Meter, MeterValue, Sample, Source, SourceError};

#[derive(Debug, Clone)]
pub struct RedfishConfig {
    /// Service root, e.g. `https://10.0.0.5` (with or without `/redfish/v1`).
    pub url: String,
    /// `user:password` file; else `EDGEWATT_REDFISH_USERNAME`/`EDGEWATT_REDFISH_PASSWORD`.
    pub credentials_file: Option<PathBuf>,
    pub insecure: bool,
    pub interval: Duration,
    pub timeout: Duration,
}

/// What one poll found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    pub chassis: String,
    pub watts: Option<f64>,
    pub energy_kwh: Option<f64>,
    pub limit_watts: Option<f64>,
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite() && *x >= 0.0)
}

/// `EnvironmentMetrics` (Redfish 2021.2+).
pub fn parse_environment_metrics(v: &Value) -> Reading {
    Reading {
        watts: num(&v["PowerWatts"]["Reading"]),
        energy_kwh: num(&v["EnergykWh"]["Reading"]),
        limit_watts: num(&v["PowerLimitWatts"]["SetPoint"]),
        ..Reading::default()
    }
}

/// Legacy `Chassis/{id}/Power`: the first `PowerControl` with a consumed value.
pub fn parse_legacy_power(v: &Value) -> Reading {
    let controls = v["PowerControl"].as_array().cloned().unwrap_or_default();
    let c = controls
        .iter()
        .find(|c| num(&c["PowerConsumedWatts"]).is_some())
        .cloned()
        .unwrap_or(Value::Null);
    Reading {
        watts: num(&c["PowerConsumedWatts"]),
        limit_watts: num(&c["PowerLimit"]["LimitInWatts"]),
        ..Reading::default()
    }
}

#[derive(Default)]
struct Shared {
    latest: Option<(Instant, Reading)>,
    error: Option<String>,
}

pub struct Redfish {
    shared: Arc<Mutex<Shared>>,
    max_age: Duration,
}

struct Poller {
    http: reqwest::Client,
    base: String,
    auth: Option<(String, String)>,
}

impl Poller {
    async fn get(&self, path: &str) -> Result<Value, String> {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{}", self.base, path)
        };
        let mut req = self.http.get(&url).header("Accept", "application/json");
        if let Some((u, p)) = &self.auth {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req.send().await.map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        resp.json()
            .await
            .map_err(|e| format!("GET {url}: invalid JSON: {e}"))
    }

    async fn poll(&self) -> Result<Reading, String> {
        let chassis = self.get("/redfish/v1/Chassis").await?;
        let members = chassis["Members"].as_array().cloned().unwrap_or_default();
        for m in members {
            let Some(id) = m["@odata.id"].as_str() else {
                continue;
            };
            let c = self.get(id).await?;
            let mut r = Reading::default();
            if let Some(env) = c["EnvironmentMetrics"]["@odata.id"].as_str() {
                r = parse_environment_metrics(&self.get(env).await?);
            }
            if r.watts.is_none() {
                if let Some(p) = c["Power"]["@odata.id"].as_str() {
                    let legacy = parse_legacy_power(&self.get(p).await?);
                    r.watts = legacy.watts;
                    r.limit_watts = r.limit_watts.or(legacy.limit_watts);
                }
            }
            if r.watts.is_some() || r.energy_kwh.is_some() {
                r.chassis = id.to_string();
                return Ok(r);
            }
        }
        Err("no chassis reports power (EnvironmentMetrics.PowerWatts or Power.PowerControl)".into())
    }
}

fn credentials(cfg: &RedfishConfig) -> anyhow::Result<Option<(String, String)>> {
    if let Some(path) = &cfg.credentials_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("redfish credentials {}: {e}", path.display()))?;
        let (u, p) = text.trim().split_once(':').ok_or_else(|| {
            anyhow::anyhow!(
                "redfish credentials {}: expected user:password",
                path.display()
            )
        })?;
        return Ok(Some((u.to_string(), p.to_string())));
    }
    match (
        std::env::var("EDGEWATT_REDFISH_USERNAME"),
        std::env::var("EDGEWATT_REDFISH_PASSWORD"),
    ) {
        (Ok(u), Ok(p)) => Ok(Some((u, p))),
        _ => Ok(None),
    }
}

impl Redfish {
    /// Starts the background poller. Fails only on configuration errors (bad URL, unreadable
    /// credentials); an unreachable BMC is a down source, reported every interval.
    pub fn start(cfg: RedfishConfig) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let base = cfg
            .url
            .trim_end_matches('/')
            .trim_end_matches("/redfish/v1")
            .to_string();
        reqwest::Url::parse(&base)
            .map_err(|e| anyhow::anyhow!("--redfish-url {}: {e}", cfg.url))?;
        if cfg.insecure {
            tracing::warn!(url = %base, "Redfish TLS certificate verification is OFF (--redfish-insecure)");
        }
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .tls_danger_accept_invalid_certs(cfg.insecure)
            .build()?;
        let poller = Poller {
            http,
            base,
            auth: credentials(&cfg)?,
        };
        let shared = Arc::new(Mutex::new(Shared::default()));
        let bg = shared.clone();
        let interval = cfg.interval;
        std::thread::Builder::new()
            .name("redfish".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        if let Ok(mut s) = bg.lock() {
                            s.error = Some(format!("cannot start the Redfish poller: {e}"));
                        }
                        return;
                    }
                };
                rt.block_on(async move {
                    loop {
                        let result = poller.poll().await;
                        if let Ok(mut s) = bg.lock() {
                            match result {
                                Ok(r) => {
                                    s.latest = Some((Instant::now(), r));
                                    s.error = None;
                                }
                                Err(e) => s.error = Some(e),
                            }
                        }
                        tokio::time::sleep(interval).await;
                    }
                });
            })?;
        Ok(Self {
            shared,
            max_age: interval * 3,
        })
    }
}

impl Source for Redfish {
    fn name(&self) -> &'static str {
        "redfish"
    }

    fn sample(&mut self, ctx: &Context) -> Result<Sample, SourceError> {
        let s = self
            .shared
            .lock()
            .map_err(|_| SourceError::Other("redfish poller panicked".into()))?;
        let Some((at, r)) = &s.latest else {
            return Err(SourceError::Other(
                s.error
                    .clone()
                    .unwrap_or_else(|| "no reading from the BMC yet".into()),
            ));
        };
        let age = ctx.now.saturating_duration_since(*at);
        if age > self.max_age {
            return Err(SourceError::Other(format!(
                "last BMC reading is {}s old{}",
                age.as_secs(),
                s.error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            )));
        }
        let value = match (r.energy_kwh, r.watts) {
            (Some(kwh), _) => MeterValue::Joules(kwh * 3.6e6),
            (None, Some(w)) => MeterValue::Watts(w),
            (None, None) => return Err(SourceError::Other("BMC reports no power".into())),
        };
        Ok(Sample {
            meters: vec![Meter {
                domain: Domain::Platform,
                zone: "platform".into(),
                value,
            }],
            budget_watts: r.limit_watts,
            ..Sample::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_resource_shapes() {
        let env = serde_json::json!({"PowerWatts": {"Reading": 374}, "PowerLimitWatts": {"SetPoint": 500}});
        let r = parse_environment_metrics(&env);
        assert_eq!(
            (r.watts, r.energy_kwh, r.limit_watts),
            (Some(374.0), None, Some(500.0))
        );
        let legacy = serde_json::json!({"PowerControl": [{"Name": "x"}, {"PowerConsumedWatts": 344, "PowerLimit": {"LimitInWatts": 500}}]});
        let r = parse_legacy_power(&legacy);
        assert_eq!((r.watts, r.limit_watts), (Some(344.0), Some(500.0)));
        assert_eq!(
            parse_legacy_power(&serde_json::json!({"PowerControl": "garbage"})),
            Reading::default()
        );
        assert_eq!(
            parse_environment_metrics(&serde_json::json!({"PowerWatts": {"Reading": -1}})).watts,
            None
        );
    }
}
