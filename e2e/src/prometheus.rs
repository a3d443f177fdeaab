//! A real Prometheus server for tests.
//!
//! Starts the Debian `prometheus` binary on a free loopback port with a temporary config and
//! TSDB, waits for `/-/ready`, lets a test add scrape targets and rule files (hot reload through
//! `/-/reload`), and kills the process on drop. Remote write is enabled, so tests can push
//! samples the way Flotta's device worker does.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// One scrape job.
#[derive(Debug, Clone)]
pub struct ScrapeTarget {
    pub job: String,
    /// `host:port`
    pub address: String,
    pub metrics_path: String,
    /// Extra labels attached to every sample of this target.
    pub labels: Vec<(String, String)>,
}

impl ScrapeTarget {
    pub fn new(job: &str, address: &str) -> Self {
        Self {
            job: job.into(),
            address: address.into(),
            metrics_path: "/metrics".into(),
            labels: Vec::new(),
        }
    }
}

/// A running Prometheus, killed on drop.
pub struct Prometheus {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    targets: Vec<ScrapeTarget>,
    rule_files: Vec<PathBuf>,
    scrape_interval: Duration,
    http: reqwest::blocking::Client,
    bin: PathBuf,
    /// The address it listens on: loopback, or every interface when pods of a real cluster
    /// query it ([`Prometheus::start_for_pods`]).
    listen_host: &'static str,
}

/// The first `name` in a `PATH` directory.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| candidate.is_file())
}

/// Where the Prometheus binary is: `$PROMETHEUS_BIN`, else `prometheus` on `PATH`.
pub fn binary() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("PROMETHEUS_BIN") {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = on_path("prometheus") {
        return Ok(p);
    }
    bail!("the `prometheus` binary is not installed: run `make deps` (apt-get install prometheus) or set PROMETHEUS_BIN")
}

/// Where `promtool` is: `$PROMTOOL_BIN`, else next to the Prometheus binary, else on `PATH`.
fn promtool_binary(prometheus: &Path) -> Result<PathBuf> {
    if let Ok(p) = std::env::var("PROMTOOL_BIN") {
        return Ok(PathBuf::from(p));
    }
    let beside = prometheus.with_file_name("promtool");
    if beside.is_file() {
        return Ok(beside);
    }
    if let Some(p) = on_path("promtool") {
        return Ok(p);
    }
    bail!("`promtool` is not installed (it comes with the `prometheus` package): set PROMTOOL_BIN")
}

impl Prometheus {
    /// Starts Prometheus scraping every `scrape_interval` (1 s suits tests).
    pub fn start(scrape_interval: Duration) -> Result<Self> {
        Self::start_with(&binary()?, scrape_interval)
    }

    /// Like [`Prometheus::start`] with an explicit binary.
    pub fn start_with(bin: &Path, scrape_interval: Duration) -> Result<Self> {
        Self::start_on(bin, scrape_interval, "127.0.0.1", None)
    }

    /// Like [`Prometheus::start`] (or [`Prometheus::start_for_pods`] with `for_pods`), its TSDB
    /// holding `history` first: OpenMetrics text (samples with timestamps, `# EOF` at the end)
    /// written into blocks by `promtool tsdb create-blocks-from openmetrics` before the server
    /// starts — Prometheus' documented backfill ("Backfilling from OpenMetrics format",
    /// prometheus/prometheus `docs/storage.md`), so queries over past days see it as if it had
    /// been scraped then. The retention is 400 days instead of 1 day: time retention deletes
    /// every block whose end lies more than the retention before the newest block's end
    /// (`tsdb/db.go` `BeyondTimeRetention`), which would drop all but the last day of it.
    pub fn start_with_history(
        scrape_interval: Duration,
        for_pods: bool,
        history: &str,
    ) -> Result<Self> {
        let host = if for_pods { "0.0.0.0" } else { "127.0.0.1" };
        Self::start_on(&binary()?, scrape_interval, host, Some(history))
    }

    /// Like [`Prometheus::start`], listening on every interface: the controller of a real
    /// cluster (`E2E_KUBECONFIG`) runs in a pod and queries it at this machine's address.
    pub fn start_for_pods(scrape_interval: Duration) -> Result<Self> {
        Self::start_on(&binary()?, scrape_interval, "0.0.0.0", None)
    }

    fn start_on(
        bin: &Path,
        scrape_interval: Duration,
        listen_host: &'static str,
        history: Option<&str>,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = crate::free_port();
        crate::install_crypto_provider();
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let mut prom = Self {
            child: None,
            port,
            dir,
            targets: Vec::new(),
            rule_files: Vec::new(),
            scrape_interval,
            http,
            bin: bin.to_path_buf(),
            listen_host,
        };
        prom.write_config()?;
        let retention = match history {
            Some(text) => {
                prom.backfill(text)?;
                "400d"
            }
            None => "1d",
        };
        let log = std::fs::File::create(prom.dir.path().join("prometheus.log"))?;
        let child = Command::new(bin)
            .arg(format!("--config.file={}", prom.config_path().display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom.dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={listen_host}:{port}"))
            .arg("--web.enable-lifecycle")
            .arg("--web.enable-remote-write-receiver")
            .arg(format!("--storage.tsdb.retention.time={retention}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!("cannot run {} (install it with `make deps`)", bin.display())
            })?;
        prom.child = Some(child);
        prom.wait_ready(Duration::from_secs(30))?;
        Ok(prom)
    }

    /// Writes `text` (OpenMetrics) into TSDB blocks in the data directory, before the start.
    fn backfill(&self, text: &str) -> Result<()> {
        let input = self.dir.path().join("history.om");
        std::fs::write(&input, text)?;
        let promtool = promtool_binary(&self.bin)?;
        let out = Command::new(&promtool)
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&input)
            .arg(self.dir.path().join("data"))
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", promtool.display()))?;
        if !out.status.success() {
            bail!(
                "promtool refused the history ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::remove_file(&input)?;
        Ok(())
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Prometheus' own log (stderr), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("prometheus.yml")
    }

    fn write_config(&self) -> Result<()> {
        let secs = self.scrape_interval.as_secs_f64();
        let mut cfg = format!(
            "global:\n  scrape_interval: {secs}s\n  scrape_timeout: {secs}s\n  evaluation_interval: {secs}s\n"
        );
        if !self.rule_files.is_empty() {
            cfg.push_str("rule_files:\n");
            for f in &self.rule_files {
                cfg.push_str(&format!("  - {:?}\n", f.display().to_string()));
            }
        }
        cfg.push_str("scrape_configs:\n");
        // One scrape config per job (Prometheus refuses a job name twice), one static config per
        // target with its own labels.
        let mut jobs: Vec<(&str, &str)> = Vec::new();
        for t in &self.targets {
            if !jobs
                .iter()
                .any(|(j, p)| *j == t.job && *p == t.metrics_path)
            {
                jobs.push((&t.job, &t.metrics_path));
            }
        }
        for (i, (job, path)) in jobs.iter().enumerate() {
            let name = if jobs[..i].iter().any(|(j, _)| j == job) {
                format!("{job}-{i}")
            } else {
                job.to_string()
            };
            cfg.push_str(&format!(
                "  - job_name: {name:?}\n    metrics_path: {path:?}\n    static_configs:\n"
            ));
            for t in self
                .targets
                .iter()
                .filter(|t| t.job == *job && t.metrics_path == *path)
            {
                cfg.push_str(&format!(
                    "      - targets: [{:?}]\n        labels:\n",
                    t.address
                ));
                cfg.push_str(&format!("          job: {job:?}\n"));
                for (k, v) in &t.labels {
                    cfg.push_str(&format!("          {k}: {v:?}\n"));
                }
            }
        }
        std::fs::write(self.config_path(), cfg)?;
        Ok(())
    }

    fn reload(&self) -> Result<()> {
        let resp = self.http.post(format!("{}/-/reload", self.url())).send()?;
        if !resp.status().is_success() {
            bail!(
                "prometheus refused the new config: {} {}\n{}",
                resp.status(),
                resp.text().unwrap_or_default(),
                self.log()
            );
        }
        Ok(())
    }

    /// Adds a scrape target and reloads.
    pub fn add_target(&mut self, target: ScrapeTarget) -> Result<()> {
        self.targets.push(target);
        self.write_config()?;
        self.reload()
    }

    /// Adds several scrape targets with one reload.
    pub fn add_targets(&mut self, targets: impl IntoIterator<Item = ScrapeTarget>) -> Result<()> {
        self.targets.extend(targets);
        self.write_config()?;
        self.reload()
    }

    /// Adds a rule file (alerting or recording rules) and reloads.
    pub fn add_rule_file(&mut self, path: impl Into<PathBuf>) -> Result<()> {
        self.rule_files.push(path.into());
        self.write_config()?;
        self.reload()
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "prometheus exited during start-up ({status}):\n{}",
                    self.log()
                );
            }
            if let Ok(r) = self.http.get(format!("{}/-/ready", self.url())).send() {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("prometheus not ready after {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (SIGKILL) while keeping its data directory; [`Prometheus::restart`]
    /// brings it back on the same port with the same data.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a stopped server again on the same port and data.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("prometheus.log"))?;
        let child = Command::new(&self.bin)
            .arg(format!("--config.file={}", self.config_path().display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!(
                "--web.listen-address={}:{}",
                self.listen_host, self.port
            ))
            .arg("--web.enable-lifecycle")
            .arg("--web.enable-remote-write-receiver")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(30))
    }

    /// Runs an instant query through the HTTP API and returns the raw JSON `data.result`.
    pub fn query_raw(&self, promql: &str) -> Result<serde_json::Value> {
        let resp: serde_json::Value = self
            .http
            .get(format!("{}/api/v1/query", self.url()))
            .query(&[("query", promql)])
            .send()?
            .json()?;
        if resp["status"] != "success" {
            bail!("query {promql:?} failed: {resp}");
        }
        Ok(resp["data"]["result"].clone())
    }

    /// Polls `promql` until it returns at least one series, or fails after `timeout`.
    pub fn wait_for_series(&self, promql: &str, timeout: Duration) -> Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let result = self.query_raw(promql)?;
            if result.as_array().is_some_and(|a| !a.is_empty()) {
                return Ok(result);
            }
            if Instant::now() > deadline {
                bail!(
                    "no series for {promql:?} after {timeout:?}\nprometheus log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}
