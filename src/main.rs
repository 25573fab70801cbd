#![forbid(unsafe_code)]

use adobe_credential_operator::cli::{Cli, Command, RunArgs};
use adobe_credential_operator::controller::{self, Context};
use adobe_credential_operator::token::{HostAllowlist, TokenClient, TokenClientConfig};
use adobe_credential_operator::{crd, telemetry};
use anyhow::Context as _;
use clap::Parser;
use kube::runtime::events::Reporter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", crd::crd_yaml()?);
            Ok(())
        }
        Command::Run(args) => run(args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format, &args.log_level);
    let extra_ca_pem = match &args.extra_ca_file {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("reading the extra CA file {}", path.display()))?),
        None => None,
    };
    let tokens = TokenClient::new(TokenClientConfig {
        allowed_hosts: HostAllowlist::new(args.allowed_token_hosts.iter().map(|h| h.trim())),
        extra_ca_pem,
        request_timeout: args.token_request_timeout,
    })
    .context("building the token HTTP client")?;
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
    let reporter = Reporter { controller: "adobe-credential-operator".into(), instance: args.instance.clone() };
    let ctx = Context::new(client, tokens, reporter);
    tracing::info!(namespaces = ?args.namespaces(), "starting the AdobeCredential controller");
    controller::run(ctx, args.namespaces(), args.concurrency).await;
    Ok(())
}
