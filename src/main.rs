#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::sync::Arc;

use adobe_credential_operator::check;
use adobe_credential_operator::cli::{CheckArgs, Cli, Command, LoginArgs, RunArgs, TokenArgs};
use adobe_credential_operator::controller::{self, Context, ContextParts, RotationConfig};
use adobe_credential_operator::crd::{self, AdobeCredential};
use adobe_credential_operator::credential_input::CredentialInput;
use adobe_credential_operator::health::Health;
use adobe_credential_operator::http;
use adobe_credential_operator::leader::{Leadership, LeaseConfig, LeaseThread};
use adobe_credential_operator::login::{self, Destination, Login, Receive};
use adobe_credential_operator::metrics::Metrics;
use adobe_credential_operator::rate_limit::HostRateLimiter;
use adobe_credential_operator::scope::{Namespaces, Scope};
use adobe_credential_operator::telemetry;
use adobe_credential_operator::token::{HostAllowlist, TokenClient, TokenClientConfig};
use anyhow::Context as _;
use clap::Parser;
use kube::api::ListParams;
use kube::runtime::events::Reporter;
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{error, info};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd { plural } => {
            let yaml = crd::crd_yaml(&plural).ok_or_else(|| anyhow::anyhow!("no CRD named {plural}"))?;
            print!("{}", yaml?);
            Ok(())
        }
        Command::Run(args) => run(*args).await,
        Command::Check(args) => exit_with(check(*args).await),
        Command::Login(args) => exit_with(login(*args).await.map(|()| true)),
    }
}

/// Ends a command-line tool: status 0 on success, 1 on a failure, with an error on one line.
fn exit_with(outcome: anyhow::Result<bool>) -> ! {
    match outcome {
        Ok(succeeded) => std::process::exit(if succeeded { 0 } else { 1 }),
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::exit(1)
        }
    }
}

async fn check(args: CheckArgs) -> anyhow::Result<bool> {
    let tokens = token_client(&args.tokens)?;
    let input = CredentialInput::load(&args.credential, false).await?;
    check::run(input, args.show_token, &tokens, &mut std::io::stdout().lock()).await
}

async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let destination = match (&args.output, args.apply) {
        (Some(path), _) => Destination::File(path.clone()),
        (None, true) => Destination::Cluster,
        (None, false) => Destination::Stdout,
    };
    if destination == Destination::Stdout && !args.show_token && std::io::stdout().is_terminal() {
        anyhow::bail!(
            "the Secret manifest holds the refresh token: write it to the cluster with --apply, into a new private file with --output FILE, pipe it (| kubectl apply --server-side -f -), or pass --show-token"
        );
    }
    let tokens = token_client(&args.tokens)?;
    let login = Login {
        input: CredentialInput::load(&args.credential, args.apply).await?,
        redirect_uri: args.redirect_uri,
        receive: if args.paste { Receive::Paste } else { Receive::Callback },
        timeout: args.timeout,
        destination,
    };
    login::run(login, &tokens, &mut std::io::stdout().lock(), &mut std::io::stderr().lock()).await
}

/// The HTTP client of token requests, as the flags say.
fn token_client(args: &TokenArgs) -> anyhow::Result<TokenClient> {
    let extra_ca_pem = match &args.extra_ca_file {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("reading the extra CA file {}", path.display()))?)
        }
        None => None,
    };
    TokenClient::new(TokenClientConfig {
        allowed_hosts: HostAllowlist::new(args.allowed_token_hosts.iter().map(|h| h.trim())),
        extra_ca_pem,
        request_timeout: args.token_request_timeout,
    })
    .context("building the token HTTP client")
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format, &args.log_level);
    let tokens = token_client(&args.tokens)?;
    let client = Client::try_default().await.context("connecting to the Kubernetes API")?;
    check_crd_installed(&client, &args).await?;
    let cluster_namespace = args.cluster_credential_namespace.clone().filter(|ns| !ns.trim().is_empty());
    if cluster_namespace.is_some() && args.namespaces() != Namespaces::All {
        anyhow::bail!(
            "--cluster-credential-namespace needs the operator to serve all namespaces (--namespaces empty): a ClusterAdobeCredential writes to any namespace it selects"
        );
    }
    let (metrics, health) = (Arc::new(Metrics::new()), Arc::new(Health::default()));
    serve_probes(&args, health.clone(), metrics.clone()).await?;
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutdown requested: finishing in-flight work");
        let _ = stop.send(true);
    });

    let identity = args.instance.clone().unwrap_or_else(default_identity);
    let lease = lease_config(&args, &identity)?;
    let leadership = match &lease {
        Some(config) => Leadership::elected(config.renew_deadline),
        None => Leadership::unelected(),
    };
    let ctx = Context::new(ContextParts {
        client: client.clone(),
        tokens,
        reporter: Reporter { controller: "adobe-credential-operator".into(), instance: Some(identity.clone()) },
        metrics,
        health: health.clone(),
        leadership: leadership.clone(),
        rate_limiter: HostRateLimiter::new(args.token_rate_limit_qps, args.token_rate_limit_burst),
        shutdown: stopped.clone(),
        min_mint_interval: args.min_mint_interval,
        shutdown_timeout: args.shutdown_timeout,
        cluster_namespace,
        rotation: RotationConfig {
            enabled: args.client_secret_rotation,
            verify_timeout: args.client_secret_verify_timeout,
        },
    });
    let namespaces = args.namespaces();
    info!(namespaces = ?namespaces, identity = %identity, "starting the AdobeCredential controller");
    let controller = controller::run(ctx, namespaces, args.concurrency);
    match lease {
        None => {
            controller.await;
            info!("stopped");
            Ok(())
        }
        Some(config) => run_when_leading(config, leadership, &health, stopped, controller).await,
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz`, and writes the bound address where asked.
async fn serve_probes(args: &RunArgs, health: Arc<Health>, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    let bound = http::serve(args.http_addr, health, metrics)
        .await
        .with_context(|| format!("binding the HTTP server to {}", args.http_addr))?;
    if let Some(path) = &args.http_addr_file {
        std::fs::write(path, bound.to_string())
            .with_context(|| format!("writing the HTTP address to {}", path.display()))?;
    }
    info!(address = %bound, "serving /metrics, /healthz and /readyz");
    Ok(())
}

/// The Lease this replica competes for, with leader election on.
fn lease_config(args: &RunArgs, identity: &str) -> anyhow::Result<Option<LeaseConfig>> {
    let Some(config) = args.leader_election.then(|| LeaseConfig {
        namespace: args.lease_namespace.clone(),
        name: args.lease_name.clone(),
        identity: identity.to_owned(),
        lease_duration: args.lease_duration,
        renew_deadline: args.lease_renew_deadline,
        retry_period: args.lease_retry_period,
    }) else {
        return Ok(None);
    };
    config.validate().map_err(anyhow::Error::msg).context("checking the lease timings")?;
    Ok(Some(config))
}

/// Runs `controller` once this replica holds the Lease, until shutdown (the Lease released) or
/// until the Lease is lost (the process exits).
async fn run_when_leading(
    config: LeaseConfig,
    leadership: Arc<Leadership>,
    health: &Health,
    stopped: watch::Receiver<bool>,
    controller: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    // The lease loop runs on its own thread and runtime: busy reconciles cannot delay renewals.
    let mut lease = LeaseThread::spawn(config, leadership).context("starting the lease thread")?;
    health.set_standby();
    let mut stop_waiting = stopped;
    tokio::select! {
        leading = lease.leading() => if !leading {
            health.set_failed();
            anyhow::bail!("the lease thread stopped before this replica became leader");
        },
        _ = stop_waiting.wait_for(|stop| *stop) => {
            lease.stop().await;
            info!("stopped before becoming leader");
            return Ok(());
        }
    }
    tokio::select! {
        () = controller => {
            lease.stop().await; // releases the lease
            info!("stopped");
            Ok(())
        }
        () = lease.lost() => {
            // Minting and writing stopped already (Leadership), and another replica may lead by
            // now: exit at once, the Deployment restarts us as a follower.
            error!("lost the lease; exiting so that two replicas never write at the same time");
            health.set_failed();
            std::process::exit(1);
        }
    }
}

async fn check_crd_installed(client: &Client, args: &RunArgs) -> anyhow::Result<()> {
    let scope = args.namespaces().scopes().into_iter().next().unwrap_or(Scope::Cluster);
    let api: Api<AdobeCredential> = scope.api(client.clone());
    match api.list(&ListParams::default().limit(1)).await {
        Err(kube::Error::Api(status)) if status.code == 404 => anyhow::bail!(
            "the AdobeCredential CRD is not installed: kubectl apply -f crds/adobecredentials.yaml (or install the Helm chart)"
        ),
        Err(err) => Err(err).context("listing AdobeCredentials (check RBAC and connectivity)"),
        Ok(_) => Ok(()),
    }
}

fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "adobe-credential-operator".into());
    format!("{host}-{:08x}", rand::random::<u32>())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
