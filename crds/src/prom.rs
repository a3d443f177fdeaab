//! Reading signals from Prometheus, shared by the controller and the extender.
//!
//! Both need the same thing: for every target of one kind, the latest value of a few signals and
//! how old that value is, fetched with one batched query per signal (never one per target), so
//! that stale or missing data can be told apart from a real reading and handled fail-safe
//! (controller) or fail-open (extender).

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    time::{Duration, SystemTime},
};

use crate::promql::{Signal, TargetQuery};

/// How to reach Prometheus. Flattened into both binaries' command lines.
#[derive(Debug, Clone, clap::Args)]
pub struct PromConfig {
    /// Prometheus base URL (the one that serves /api/v1/query).
    #[arg(
        long = "prometheus-url",
        env = "PROMETHEUS_URL",
        default_value = "http://prometheus-operated.monitoring:9090"
    )]
    pub url: String,
    /// File holding a bearer token (e.g. a service-account token for an authenticating proxy).
    #[arg(
        long = "prometheus-bearer-token-file",
        env = "PROMETHEUS_BEARER_TOKEN_FILE"
    )]
    pub bearer_token_file: Option<PathBuf>,
    /// File holding `user:password` for HTTP basic auth.
    #[arg(
        long = "prometheus-basic-auth-file",
        env = "PROMETHEUS_BASIC_AUTH_FILE"
    )]
    pub basic_auth_file: Option<PathBuf>,
    /// PEM file with the CA that signed Prometheus' certificate (added to the system roots).
    #[arg(long = "prometheus-ca-file", env = "PROMETHEUS_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Skip TLS certificate verification (testing only).
    #[arg(
        long = "prometheus-insecure-skip-verify",
        env = "PROMETHEUS_INSECURE_SKIP_VERIFY"
    )]
    pub insecure_skip_verify: bool,
    /// Timeout of one query.
    #[arg(long = "prometheus-timeout", env = "PROMETHEUS_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse(s).map_err(|e| e.to_string())
}

impl PromConfig {
    /// A config for `url` with no auth and a 5 s timeout (tests, local runs).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            bearer_token_file: None,
            basic_auth_file: None,
            ca_file: None,
            insecure_skip_verify: false,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Why a query gave no answer. Any of these means "no data": act on nothing.
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    #[error("prometheus client set-up: {0}")]
    Config(String),
    #[error("prometheus unreachable or failed: {0}")]
    Request(#[from] prometheus_http_query::Error),
    #[error("query {query:?} returned {kind}, expected an instant vector")]
    NotAVector { query: String, kind: &'static str },
    #[error("range query {query:?} did not return a matrix")]
    NotAMatrix { query: String },
}

/// One series of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One series of a range query: its labels and `(unix seconds, value)` samples, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    pub labels: BTreeMap<String, String>,
    pub samples: Vec<(f64, f64)>,
}

/// A value and the age of the sample it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub value: f64,
    /// Seconds between the sample and the query; `None` when the age query had no answer for
    /// this target (treat as stale).
    pub age_secs: Option<f64>,
}

impl Reading {
    /// The value, if its sample is at most `max_age` old.
    pub fn fresh(&self, max_age: Duration) -> Option<f64> {
        match self.age_secs {
            Some(age) if age <= max_age.as_secs_f64() && self.value.is_finite() => Some(self.value),
            _ => None,
        }
    }
}

/// Every requested signal for every target of one kind, as of `fetched_at`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SignalTable {
    pub fetched_at: Option<SystemTime>,
    pub readings: HashMap<String, HashMap<Signal, Reading>>,
}

impl SignalTable {
    pub fn get(&self, target: &str, signal: Signal) -> Option<Reading> {
        self.readings.get(target)?.get(&signal).copied()
    }

    /// Targets with at least one reading.
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.readings.keys().map(String::as_str)
    }
}

/// A Prometheus client with edgewatt's batched reads.
#[derive(Clone)]
pub struct PromReader {
    client: prometheus_http_query::Client,
    timeout: Duration,
}

impl PromReader {
    pub fn new(config: &PromConfig) -> Result<Self, PromError> {
        // reqwest is built without a bundled crypto provider; use ring, as kube does.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut headers = reqwest::header::HeaderMap::new();
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .map_err(|e| PromError::Config(format!("{}: {e}", p.display())))
        };
        if let Some(path) = &config.bearer_token_file {
            let value = format!("Bearer {}", read(path)?);
            headers.insert(
                reqwest::header::AUTHORIZATION,
                value.parse().map_err(|_| {
                    PromError::Config("bearer token is not a valid header value".into())
                })?,
            );
        }
        if let Some(path) = &config.basic_auth_file {
            use base64::Engine;
            let creds = read(path)?;
            if !creds.contains(':') {
                return Err(PromError::Config(format!(
                    "{}: expected user:password",
                    path.display()
                )));
            }
            let value = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(creds)
            );
            headers.insert(
                reqwest::header::AUTHORIZATION,
                value.parse().map_err(|_| {
                    PromError::Config("basic auth is not a valid header value".into())
                })?,
            );
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(config.timeout)
            .tls_danger_accept_invalid_certs(config.insecure_skip_verify);
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| PromError::Config(format!("{}: {e}", path.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| PromError::Config(format!("{}: {e}", path.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| PromError::Config(e.to_string()))?;
        let client = prometheus_http_query::Client::from(http, &config.url)?;
        Ok(Self {
            client,
            timeout: config.timeout,
        })
    }

    /// Runs an instant query that must return a vector.
    pub async fn vector(&self, promql: &str) -> Result<Vec<Series>, PromError> {
        let result = self
            .client
            .query(promql)
            .timeout(self.timeout.as_millis() as i64)
            .get()
            .await?;
        let data = result.data();
        let vector = data.as_vector().ok_or_else(|| PromError::NotAVector {
            query: promql.to_string(),
            kind: if data.as_scalar().is_some() {
                "a scalar"
            } else {
                "a matrix"
            },
        })?;
        Ok(vector
            .iter()
            .map(|s| Series {
                labels: s
                    .metric()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                value: s.sample().value(),
            })
            .collect())
    }

    /// Runs a range query (`start`..=`end`, unix seconds, every `step` seconds) that must return
    /// a matrix.
    pub async fn matrix(
        &self,
        promql: &str,
        start: i64,
        end: i64,
        step: f64,
    ) -> Result<Vec<RangeSeries>, PromError> {
        let result = self
            .client
            .query_range(promql, start, end, step)
            .timeout(self.timeout.as_millis() as i64)
            .get()
            .await?;
        let data = result.data();
        let matrix = data.as_matrix().ok_or_else(|| PromError::NotAMatrix {
            query: promql.to_string(),
        })?;
        Ok(matrix
            .iter()
            .map(|s| RangeSeries {
                labels: s
                    .metric()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                samples: s
                    .samples()
                    .iter()
                    .map(|x| (x.timestamp(), x.value()))
                    .collect(),
            })
            .collect())
    }

    /// Runs an instant query and keys the result by `label` (series without it are dropped;
    /// duplicates keep the largest value, the conservative reading for draw).
    pub async fn by_label(
        &self,
        promql: &str,
        label: &str,
    ) -> Result<HashMap<String, f64>, PromError> {
        let mut out: HashMap<String, f64> = HashMap::new();
        for s in self.vector(promql).await? {
            if let Some(key) = s.labels.get(label) {
                let e = out.entry(key.clone()).or_insert(f64::NEG_INFINITY);
                *e = e.max(s.value);
            }
        }
        Ok(out)
    }

    /// Fetches `signals` for every target of `query`'s kind: two queries per signal (value and
    /// age), all in flight at once. Any failed query fails the whole read, because a partial
    /// table could make a healthy target look starved or a starved one look healthy.
    pub async fn signals(
        &self,
        query: &TargetQuery,
        signals: &[Signal],
    ) -> Result<SignalTable, PromError> {
        let label = query.join_label.as_str();
        let fetches = signals.iter().map(|&signal| async move {
            let (value_q, age_q) = (query.value(signal), query.age(signal));
            let (values, ages) =
                futures::try_join!(self.by_label(&value_q, label), self.by_label(&age_q, label))?;
            Ok::<_, PromError>((signal, values, ages))
        });
        let results = futures::future::try_join_all(fetches).await?;
        let mut table = SignalTable {
            fetched_at: Some(SystemTime::now()),
            readings: HashMap::new(),
        };
        for (signal, values, ages) in results {
            for (target, value) in values {
                let age_secs = ages.get(&target).copied();
                table
                    .readings
                    .entry(target)
                    .or_default()
                    .insert(signal, Reading { value, age_secs });
            }
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_or_unknown_age_is_not_fresh() {
        let r = |age| Reading {
            value: 0.5,
            age_secs: age,
        };
        assert_eq!(r(Some(10.0)).fresh(Duration::from_secs(60)), Some(0.5));
        assert_eq!(r(Some(61.0)).fresh(Duration::from_secs(60)), None);
        assert_eq!(r(None).fresh(Duration::from_secs(60)), None);
        let nan = Reading {
            value: f64::NAN,
            age_secs: Some(1.0),
        };
        assert_eq!(nan.fresh(Duration::from_secs(60)), None);
    }

    #[test]
    fn auth_files_are_checked() {
        let dir = std::env::temp_dir().join(format!("edgewatt-prom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("basic");
        std::fs::write(&bad, "no-colon").unwrap();
        let mut cfg = PromConfig::new("http://127.0.0.1:9");
        cfg.basic_auth_file = Some(bad);
        let err = PromReader::new(&cfg).err().unwrap().to_string();
        assert!(err.contains("expected user:password"), "{err}");
        cfg.basic_auth_file = Some(dir.join("missing"));
        assert!(PromReader::new(&cfg).is_err());
    }
}
