//! A small client for the engine's admin API (`/admin/v1`), used by `plexus admin` and
//! `plexus shadow`: one request per call, HTTP/1.1, over TLS for an `https://` URL.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

/// Largest answer read (an audit page, an error list).
const MAX_ANSWER: usize = 32 << 20;
/// Longest a call may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Where the engine's admin API is, and who is calling.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// The engine's HTTP address.
    #[arg(
        long,
        value_name = "URL",
        env = "PLEXUS_URL",
        default_value = "http://127.0.0.1:8480"
    )]
    pub url: String,
    /// Bearer token (`plexus token new` makes one). Prefer the environment variable: a
    /// token given on the command line shows in the process list.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "PLEXUS_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// CA certificate(s), PEM, to trust for an `https://` URL.
    #[arg(long, value_name = "FILE", env = "PLEXUS_CA")]
    pub ca: Option<PathBuf>,
}

/// A request body.
pub enum Body {
    None,
    Json(Value),
    Wasm(Vec<u8>),
}

impl ApiArgs {
    /// Calls `method path` and returns the status and the JSON answer. A 401 or 403 is
    /// an error that says which token to use.
    pub fn call(&self, method: &str, path: &str, body: Body) -> anyhow::Result<(u16, Value)> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (status, bytes) = runtime.block_on(async {
            tokio::time::timeout(TIMEOUT, self.request(method, path, body))
                .await
                .map_err(|_| anyhow::anyhow!("{} did not answer within {TIMEOUT:?}", self.url))?
        })?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        match status {
            401 => bail!(
                "{}: the admin API wants a valid token (--token or PLEXUS_TOKEN; `plexus token new` makes one)",
                self.url
            ),
            403 => bail!(
                "{method} {path}: this token's role may not do that ({})",
                error_text(&value)
            ),
            _ => Ok((status, value)),
        }
    }

    async fn request(&self, method: &str, path: &str, body: Body) -> anyhow::Result<(u16, Bytes)> {
        let url: hyper::Uri = self
            .url
            .parse()
            .with_context(|| format!("{} is not a URL", self.url))?;
        let https = match url.scheme_str() {
            Some("https") => true,
            Some("http") | None => false,
            Some(other) => bail!("{}: unsupported scheme {other}", self.url),
        };
        let host = url.host().context("the URL names no host")?.to_owned();
        let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .with_context(|| {
                format!(
                    "cannot reach the engine at {} (is `plexus run` running there?)",
                    self.url
                )
            })?;
        let (content_type, payload) = match body {
            Body::None => (None, Bytes::new()),
            Body::Json(v) => (Some("application/json"), Bytes::from(v.to_string())),
            Body::Wasm(b) => (Some("application/wasm"), Bytes::from(b)),
        };
        let base = url.path().trim_end_matches('/');
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("{base}{path}"))
            .header(header::HOST, format!("{host}:{port}"));
        if let Some(t) = content_type {
            request = request.header(header::CONTENT_TYPE, t);
        }
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Full::new(payload))?;
        if https {
            let ca = self.ca.as_ref().context(
                "an https URL needs --ca FILE (or PLEXUS_CA): the CA certificate that signed the engine's",
            )?;
            let config = plexus_mllp::tls::client_config_from_pem(ca)?;
            let name = plexus_mllp::tls::server_name(&host)?;
            let tls = tokio_rustls::TlsConnector::from(Arc::<rustls::ClientConfig>::clone(&config))
                .connect(name, tcp)
                .await
                .with_context(|| format!("TLS handshake with {}", self.url))?;
            send(tls, request).await
        } else {
            send(tcp, request).await
        }
    }
}

async fn send<S>(io: S, request: hyper::Request<Full<Bytes>>) -> anyhow::Result<(u16, Bytes)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    tokio::spawn(conn);
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, body))
}

/// The `error` of an API problem answer, or the whole answer.
pub fn error_text(value: &Value) -> String {
    value
        .get("error")
        .and_then(Value::as_str)
        .map_or_else(|| value.to_string(), str::to_owned)
}

/// Fails with the API's reason unless the status is one of `ok`.
pub fn expect(status: u16, value: &Value, ok: &[u16], what: &str) -> anyhow::Result<()> {
    if ok.contains(&status) {
        Ok(())
    } else {
        bail!("{what}: {} ({status})", error_text(value))
    }
}

/// `PLUGIN@SHA256` stages as the API's `chain` array.
pub fn chain(stages: &[String]) -> anyhow::Result<Value> {
    let stages = stages
        .iter()
        .map(|s| {
            let (plugin, sha) = s
                .rsplit_once('@')
                .with_context(|| format!("{s}: write each stage as PLUGIN@SHA256"))?;
            Ok(serde_json::json!({ "plugin": plugin, "sha256": sha }))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(serde_json::json!({ "chain": stages }))
}
