//! The operator's client: deploy a component, list reducers.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::Value;

/// Where the daemon is and how to authenticate.
#[derive(Args)]
pub struct Connection {
    /// The daemon's base URL.
    #[arg(long, env = "EVENTLOGS_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A bearer token (deploys need the admin scope).
    #[arg(long, env = "EVENTLOGS_TOKEN")]
    token: Option<String>,
    /// A PEM certificate authority to trust for an `https://` URL (for
    /// example a TLS proxy in front of the daemon with a private CA),
    /// besides the usual web roots.
    #[arg(long, env = "EVENTLOGS_CA_FILE")]
    ca_file: Option<PathBuf>,
}

/// `eventlogs deploy NAME FILE.wasm`.
#[derive(Args)]
pub struct DeployArgs {
    /// The reducer name, e.g. `payment`.
    name: String,
    /// The compiled component.
    file: PathBuf,
    /// Validate it and replay the name's logs with it, as the deploy
    /// would, but store and activate nothing.
    #[arg(long)]
    dry_run: bool,
    /// Activate it even if it fails on existing logs.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    connection: Connection,
}

impl Connection {
    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        let mut client = reqwest::Client::builder();
        if let Some(file) = &self.ca_file {
            let pem = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let ca = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{} is not a PEM certificate", file.display()))?;
            client = client.add_root_certificate(ca);
        }
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let request = client.build()?.request(method, url);
        Ok(match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        })
    }
}

/// Uploads the component and prints the active version.
pub async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let bytes = tokio::fs::read(&args.file)
        .await
        .with_context(|| format!("reading {}", args.file.display()))?;
    let response = args
        .connection
        .request(reqwest::Method::PUT, &format!("/v1/reducers/{}", args.name))?
        .query(&[("dry_run", args.dry_run), ("force", args.force)])
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .await
        .context("cannot reach the daemon")?;
    let body = answer(response).await?;
    let failed = body["failed_logs"].as_array().map_or(0, Vec::len);
    if args.dry_run {
        println!(
            "{} {} would be activated ({} bytes; replayed {} logs, failing on {failed}); nothing was stored",
            args.name,
            body["version"].as_str().unwrap_or("?"),
            body["size"],
            body["replayed_logs"],
        );
        return Ok(());
    }
    println!(
        "{} {} is active ({} bytes{})",
        args.name,
        body["version"].as_str().unwrap_or("?"),
        body["size"],
        if body["created"] == Value::Bool(false) {
            ", already stored"
        } else {
            ""
        }
    );
    Ok(())
}

/// Prints every reducer, its active version and how many versions it has.
pub async fn reducers(connection: Connection) -> anyhow::Result<()> {
    let response = connection
        .request(reqwest::Method::GET, "/v1/reducers")?
        .send()
        .await
        .context("cannot reach the daemon")?;
    let body = answer(response).await?;
    for reducer in body.as_array().into_iter().flatten() {
        println!(
            "{}\tactive {}\t{} version(s)",
            reducer["name"].as_str().unwrap_or("?"),
            reducer["active_version"].as_str().unwrap_or("?"),
            reducer["versions"].as_array().map_or(0, Vec::len)
        );
    }
    Ok(())
}

/// The JSON body of a successful response, or the problem as an error.
async fn answer(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "{status}: {}",
            body["detail"].as_str().unwrap_or("no details")
        );
    }
    Ok(body)
}
