//! Reaching a gateway: its URL (`--gateway`, `FJORD_GATEWAY_URL`, `OPENFAAS_URL` as faas-cli
//! does, then a stack's `provider.gateway`) and the basic-auth credentials (`FJORD_BASIC_AUTH_USER`/`_PASSWORD`, else the ones
//! `fjord up` stored under the data directory).

use std::path::{Path, PathBuf};

use anyhow::Context;

#[derive(Clone, Debug, clap::Args)]
pub struct GatewayArgs {
    /// Gateway URL.
    #[arg(long, env = "FJORD_GATEWAY_URL")]
    pub gateway: Option<String>,
    /// Where `fjord up` keeps its data (and the generated credentials).
    #[arg(long, env = "FJORD_DATA_DIR", default_value = ".fjord")]
    pub data_dir: PathBuf,
}

pub struct Gateway {
    pub url: String,
    pub http: reqwest::Client,
    credentials: Option<(String, String)>,
}

/// The folder holding `basic-auth-user` and `basic-auth-password`.
pub fn secrets_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("secrets")
}

/// Credentials from the environment, else from the secrets folder.
pub fn credentials(data_dir: &Path) -> Option<(String, String)> {
    if let (Ok(u), Ok(p)) = (
        std::env::var("FJORD_BASIC_AUTH_USER"),
        std::env::var("FJORD_BASIC_AUTH_PASSWORD"),
    ) {
        return Some((u, p));
    }
    let dir = std::env::var_os("FJORD_BASIC_AUTH_FILE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| secrets_dir(data_dir));
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .ok()
            .map(|s| s.trim().to_owned())
    };
    Some((read("basic-auth-user")?, read("basic-auth-password")?))
}

impl Gateway {
    /// `stack_gateway` is the stack's `provider.gateway`, used when neither the flag nor the
    /// variables name one.
    pub fn new(args: &GatewayArgs, stack_gateway: Option<&str>) -> anyhow::Result<Self> {
        let url = args
            .gateway
            .clone()
            .or_else(|| std::env::var("OPENFAAS_URL").ok().filter(|u| !u.is_empty()))
            .or_else(|| stack_gateway.filter(|u| !u.is_empty()).map(str::to_owned))
            .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
        let http = reqwest::Client::builder()
            .build()
            .context("building the HTTP client")?;
        Ok(Gateway {
            url: url.trim_end_matches('/').to_owned(),
            http,
            credentials: credentials(&args.data_dir),
        })
    }

    /// A request to `/system/...` with credentials attached.
    pub fn system(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.url));
        match &self.credentials {
            Some((u, p)) => request.basic_auth(u, Some(p)),
            None => request,
        }
    }

    /// Sends and turns a non-2xx answer into an error carrying the gateway's message.
    pub async fn send(request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = request.send().await.context("reaching the gateway")?;
        Self::check(response).await
    }

    /// Turns a non-2xx answer into an error carrying the gateway's message.
    pub async fn check(response: reqwest::Response) -> anyhow::Result<reqwest::Response> {
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or(text);
        anyhow::bail!("{status}: {message}")
    }
}
