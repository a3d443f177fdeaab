//! HTTP to a BMC the way Redfish clients are expected to talk (DMTF DSP0266 "Session login"):
//! log in once by POSTing `UserName`/`Password` to the service's `Sessions` collection and send
//! the returned `X-Auth-Token` with every request — one authentication instead of one per GET,
//! which slow BMCs and their auth backends (LDAP, RADIUS) appreciate. A service that has no
//! sessions (the POST fails or returns no token) gets HTTP Basic on every request instead. A 401
//! on a session (it expired, the BMC rebooted) logs in again once.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::source::error_chain;

/// How to reach a BMC.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Service root, e.g. `https://10.0.0.5` (with or without `/redfish/v1`).
    pub url: String,
    pub credentials: Option<(String, String)>,
    pub insecure: bool,
    /// PEM bundle of the CA(s) that signed the BMC's certificate: trusted instead of the system
    /// roots (BMC certificates are usually signed by a site CA, or self-signed).
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    /// Not logged in yet (or the session was lost).
    SessionPending,
    Session,
    Basic,
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    credentials: Option<(String, String)>,
    auth: Auth,
    token: Option<String>,
}

impl Client {
    /// Fails on configuration errors only (bad URL, unreadable CA file).
    pub fn new(cfg: &ClientConfig) -> anyhow::Result<Self> {
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
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .tls_danger_accept_invalid_certs(cfg.insecure);
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("--redfish-ca-file {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| anyhow::anyhow!("--redfish-ca-file {}: {e}", path.display()))?;
            if certs.is_empty() {
                anyhow::bail!(
                    "--redfish-ca-file {}: no PEM certificate in it",
                    path.display()
                );
            }
            builder = builder.tls_certs_only(certs);
        }
        Ok(Self {
            http: builder.build()?,
            base,
            auth: if cfg.credentials.is_some() {
                Auth::SessionPending
            } else {
                Auth::None
            },
            credentials: cfg.credentials.clone(),
            token: None,
        })
    }

    pub fn auth(&self) -> Auth {
        self.auth
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{}", self.base, path)
        }
    }

    /// GET a resource as JSON; errors name the URL and say what happened.
    pub async fn get(&mut self, path: &str) -> Result<Value, String> {
        if self.auth == Auth::SessionPending {
            self.login().await;
        }
        let mut resp = self.send(path).await?;
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED && self.auth == Auth::Session {
            tracing::info!("Redfish session rejected (expired?); logging in again");
            self.auth = Auth::SessionPending;
            self.token = None;
            self.login().await;
            resp = self.send(path).await?;
        }
        let url = self.url(path);
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        read_json(resp).await.map_err(|e| format!("GET {url}: {e}"))
    }

    async fn send(&self, path: &str) -> Result<reqwest::Response, String> {
        let url = self.url(path);
        let mut req = self
            .http
            .get(&url)
            .header("Accept", "application/json")
            .header("OData-Version", "4.0");
        match (self.auth, &self.credentials, &self.token) {
            (Auth::Session, _, Some(token)) => req = req.header("X-Auth-Token", token),
            (Auth::Basic | Auth::SessionPending, Some((u, p)), _) => {
                req = req.basic_auth(u, Some(p))
            }
            _ => {}
        }
        req.send()
            .await
            .map_err(|e| format!("GET {url}: {}", error_chain(&e)))
    }

    /// Creates a session; falls back to Basic for good when the service offers none.
    async fn login(&mut self) {
        let Some((user, password)) = self.credentials.clone() else {
            self.auth = Auth::None;
            return;
        };
        // The service root is readable without authentication (DSP0266) and names the
        // collection; the usual path is the fallback.
        let sessions = match self.send("/redfish/v1/").await {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.ok().and_then(|v| {
                v["Links"]["Sessions"]["@odata.id"]
                    .as_str()
                    .map(String::from)
            }),
            _ => None,
        }
        .unwrap_or_else(|| "/redfish/v1/SessionService/Sessions".into());
        let url = self.url(&sessions);
        let resp = self
            .http
            .post(&url)
            .header("OData-Version", "4.0")
            .json(&serde_json::json!({"UserName": user, "Password": password}))
            .send()
            .await;
        let token = match &resp {
            Ok(r) if r.status().is_success() => r
                .headers()
                .get("X-Auth-Token")
                .and_then(|t| t.to_str().ok())
                .filter(|t| !t.is_empty())
                .map(String::from),
            _ => None,
        };
        match token {
            Some(t) => {
                if self.token.is_none() {
                    tracing::info!(%url, "Redfish session created (X-Auth-Token)");
                }
                self.token = Some(t);
                self.auth = Auth::Session;
            }
            None => {
                let why = match resp {
                    Ok(r) if r.status().is_success() => {
                        format!("HTTP {} without X-Auth-Token", r.status())
                    }
                    // A BMC that is down or overloaded: try sessions again next poll (this
                    // request goes out with Basic meanwhile).
                    Ok(r) if r.status().is_server_error() && r.status() != 501 => {
                        tracing::info!(%url, status = %r.status(), "Redfish login failed; retrying next poll");
                        return;
                    }
                    Ok(r) => format!("HTTP {}", r.status()),
                    Err(e) => {
                        tracing::debug!(%url, error = %error_chain(&e), "Redfish login failed; retrying next poll");
                        return;
                    }
                };
                tracing::info!(%url, reason = %why, "no Redfish session; using HTTP Basic auth on every request");
                self.auth = Auth::Basic;
            }
        }
    }
}

/// The body as JSON. BMC web servers that end an HTTP/1.0 body by closing the TLS connection
/// without `close_notify` (and without `Content-Length`) make the last read fail; a body that
/// already parses as a complete JSON document is accepted anyway — a truncated one cannot parse.
async fn read_json(mut resp: reqwest::Response) -> Result<Value, String> {
    let mut body = Vec::new();
    let mut cut = None;
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c),
            Ok(None) => break,
            Err(e) => {
                cut = Some(error_chain(&e));
                break;
            }
        }
    }
    serde_json::from_slice(&body).map_err(|e| match cut {
        Some(cut) => format!("body cut short ({cut})"),
        None => format!("invalid JSON: {e}"),
    })
}
