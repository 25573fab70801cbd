//! `fake-token-server`: the fake Adobe IMS / Akeneo token endpoints as a standalone program, for
//! demos and manual testing. Prints the base URL on stdout once it is serving, logs requests
//! (without credentials) on stderr, and exits on SIGINT or SIGTERM.

use std::{io::IsTerminal, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Parser;
use fake_token_server::{AdobeClient, FakeTokenServer};

/// No `Debug`: the values hold client secrets and passwords.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// An Adobe credential; without scopes, any scope is allowed. Repeatable.
    #[arg(long = "adobe-client", value_name = "ID:SECRET[:SCOPE,SCOPE…]", value_parser = parse_adobe_client)]
    adobe_clients: Vec<AdobeClient>,

    /// An Akeneo API connection. Repeatable.
    #[arg(long = "akeneo-client", value_name = "ID:SECRET", value_parser = parse_pair)]
    akeneo_clients: Vec<(String, String)>,

    /// An Akeneo user. Repeatable.
    #[arg(long = "akeneo-user", value_name = "NAME:PASSWORD", value_parser = parse_pair)]
    akeneo_users: Vec<(String, String)>,

    /// Lifetime of Adobe access tokens and Akeneo access tokens, in seconds.
    #[arg(long, value_name = "N", default_value_t = 86_400)]
    token_lifetime_secs: u64,

    /// Serve HTTPS with this certificate chain (PEM, leaf first).
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// Private key (PEM) for --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// Splits `ID:SECRET`. Error messages leave the value out since it holds a secret.
fn parse_pair(value: &str) -> Result<(String, String), String> {
    match value.split_once(':') {
        Some((id, secret)) if !id.is_empty() && !secret.is_empty() => Ok((id.to_owned(), secret.to_owned())),
        _ => Err("expected NAME:SECRET with both parts non-empty".into()),
    }
}

fn parse_adobe_client(value: &str) -> Result<AdobeClient, String> {
    let (client_id, rest) = parse_pair(value)?;
    let client = match rest.split_once(':') {
        None => AdobeClient::new(client_id, rest),
        Some((secret, scopes)) => {
            AdobeClient::new(client_id, secret).with_scopes(scopes.split(',').filter(|scope| !scope.is_empty()))
        }
    };
    Ok(client)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();

    let server = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let cert = std::fs::read_to_string(cert).with_context(|| format!("reading {}", cert.display()))?;
            let key = std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
            FakeTokenServer::start_tls_on(args.listen, &cert, &key).await?
        }
        _ => FakeTokenServer::start_on(args.listen).await?,
    };

    let lifetime = Duration::from_secs(args.token_lifetime_secs);
    for client in args.adobe_clients {
        server.register_adobe_client(client.with_token_lifetime(lifetime))?;
    }
    for (client_id, secret) in args.akeneo_clients {
        server.register_akeneo_client(client_id, secret);
    }
    for (username, password) in args.akeneo_users {
        server.register_akeneo_user(username, password);
    }
    server.set_akeneo_access_token_lifetime(lifetime);

    println!("{}", server.url());
    tracing::info!(url = server.url(), "serving");

    shutdown_signal().await?;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for SIGINT")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
