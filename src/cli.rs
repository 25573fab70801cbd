//! Command line: `crd` prints the CRD, `run` runs the controller, `check` and `login` help people
//! set credentials up. Every flag of `run` also reads an environment variable, which is how the
//! Helm chart configures the operator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand};
use reqwest::Url;

use crate::schedule::positive_duration;
use crate::scope::Namespaces;
use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(name = "adobe-credential-operator", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a CustomResourceDefinition as YAML.
    Crd {
        /// Its plural name.
        #[arg(default_value = "adobecredentials", value_parser = ["adobecredentials", "clusteradobecredentials"])]
        plural: String,
    },
    /// Run the controller.
    Run(Box<RunArgs>),
    /// Mint once for an AdobeCredential manifest and print what its target Secret would hold
    /// (token masked), the expiry and the granted scopes, or the reason the operator would report.
    /// Exit status 0 when a token was minted, 1 when not.
    Check(Box<CheckArgs>),
    /// Sign a user in for an `oauthWebApp` credential (in a browser, PKCE) and write the refresh
    /// token that starts the operator's chain into the Secret the credential names: printed as a
    /// manifest, or applied with `--apply`.
    Login(Box<LoginArgs>),
}

/// Which AdobeCredential a command works on and where its Secrets come from (`check`, `login`).
#[derive(Debug, clap::Args)]
pub struct CredentialArgs {
    /// Name of an AdobeCredential to read, with its Secrets, from the cluster of the current
    /// kubeconfig (instead of `-f`).
    #[arg(required_unless_present = "files", conflicts_with = "files")]
    pub name: Option<String>,

    /// Namespace of the credential (default: the kubeconfig context's, or the manifest's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,

    /// YAML or JSON files holding the AdobeCredential and (some of) its Secrets; repeatable.
    #[arg(short = 'f', long = "file")]
    pub files: Vec<PathBuf>,

    /// With `-f`: read the Secrets the files do not hold from the cluster of the current
    /// kubeconfig (the credential's namespace). Nothing is written.
    #[arg(long, conflicts_with = "name")]
    pub from_cluster: bool,
}

/// How token requests are sent (`run` and `check`).
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// Hosts token requests and I/O Management API calls may go to: exact names or `*.domain`
    /// patterns (SSRF guard).
    #[arg(
        long,
        env = "ACO_ALLOWED_TOKEN_HOSTS",
        value_delimiter = ',',
        default_value = "*.adobelogin.com,api.adobe.io"
    )]
    pub allowed_token_hosts: Vec<String>,

    /// PEM file of extra CA certificates trusted for token endpoints, besides the built-in roots.
    #[arg(long, env = "ACO_EXTRA_CA_FILE")]
    pub extra_ca_file: Option<PathBuf>,

    /// Timeout of one token request, e.g. 30s.
    #[arg(long, env = "ACO_TOKEN_REQUEST_TIMEOUT", default_value = "30s", value_parser = duration_arg)]
    pub token_request_timeout: Duration,
}

/// `check`: mint once for a credential, write nothing.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub credential: CredentialArgs,

    /// Print the token itself instead of its fingerprint.
    #[arg(long)]
    pub show_token: bool,

    #[command(flatten)]
    pub tokens: TokenArgs,
}

/// `login`: sign a user in and write the refresh token.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    #[command(flatten)]
    pub credential: CredentialArgs,

    /// The redirect URI registered for the OAuth Web App credential in the Adobe Developer
    /// Console. With a host of this machine (localhost, 127.0.0.1, [::1]) the command receives
    /// the redirect itself, over HTTPS with a certificate made for this sign-in.
    #[arg(long, default_value = "https://localhost:8443/callback")]
    pub redirect_uri: Url,

    /// Read the address the browser was sent to from standard input instead of receiving the
    /// redirect (a redirect URI on another host, or a browser on another machine).
    #[arg(long)]
    pub paste: bool,

    /// How long to wait for the user to sign in.
    #[arg(long, default_value = "5m", value_parser = duration_arg)]
    pub timeout: Duration,

    /// Write the Secret to the cluster of the current kubeconfig (server-side apply of its one
    /// key) instead of printing its manifest. Should the write fail, the manifest is kept in a
    /// new file (mode 0600) whose path the error names.
    #[arg(long)]
    pub apply: bool,

    /// Write the manifest into FILE instead of standard output: a new file with mode 0600 (an
    /// existing FILE is refused before the sign-in).
    #[arg(long, value_name = "FILE", conflicts_with = "apply")]
    pub output: Option<PathBuf>,

    /// Print the manifest, which holds the refresh token, even when standard output is a
    /// terminal.
    #[arg(long)]
    pub show_token: bool,

    #[command(flatten)]
    pub tokens: TokenArgs,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Namespaces to serve, comma-separated; empty serves all namespaces.
    #[arg(long, env = "ACO_NAMESPACES", value_delimiter = ',', num_args = 0..)]
    pub namespaces: Vec<String>,

    #[command(flatten)]
    pub tokens: TokenArgs,

    /// Credentials reconciled at once.
    #[arg(long, env = "ACO_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,

    /// Log format.
    #[arg(long, env = "ACO_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter, e.g. `info` or `adobe_credential_operator=debug,kube=info`.
    #[arg(long, env = "ACO_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Name of this replica in Events and in the Lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,

    /// Address of the HTTP server for /metrics, /healthz and /readyz (port 0 picks a free one).
    #[arg(long, env = "ACO_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// File to write the HTTP server's bound address to (useful with port 0: scripts and tests
    /// find the operator without reading its log).
    #[arg(long, env = "ACO_HTTP_ADDR_FILE")]
    pub http_addr_file: Option<PathBuf>,

    /// Elect one leader among replicas through a Lease; only the leader mints and writes.
    #[arg(long, env = "ACO_LEADER_ELECTION", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub leader_election: bool,

    /// Serve ClusterAdobeCredentials: the namespace (the operator's own, or one the platform
    /// team controls) that holds their source Secrets and minting AdobeCredentials. Needs the
    /// operator to serve all namespaces. Unset: ClusterAdobeCredentials are not served.
    #[arg(long, env = "ACO_CLUSTER_CREDENTIAL_NAMESPACE")]
    pub cluster_credential_namespace: Option<String>,

    /// Name of the Lease.
    #[arg(long, env = "ACO_LEASE_NAME", default_value = "adobe-credential-operator")]
    pub lease_name: String,

    /// Namespace of the Lease (the operator's own namespace).
    #[arg(long, env = "ACO_LEASE_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// How long a Lease stays valid without renewal; a follower takes over after that.
    #[arg(long, env = "ACO_LEASE_DURATION", default_value = "15s", value_parser = duration_arg)]
    pub lease_duration: Duration,

    /// The leader gives up when it could not renew for this long (less than the duration).
    #[arg(long, env = "ACO_LEASE_RENEW_DEADLINE", default_value = "10s", value_parser = duration_arg)]
    pub lease_renew_deadline: Duration,

    /// Interval of Lease renewals and acquisition attempts.
    #[arg(long, env = "ACO_LEASE_RETRY_PERIOD", default_value = "2s", value_parser = duration_arg)]
    pub lease_retry_period: Duration,

    /// Token requests per second, per token-endpoint host (requests over it wait their turn).
    #[arg(long, env = "ACO_TOKEN_RATE_LIMIT_QPS", default_value_t = 10.0)]
    pub token_rate_limit_qps: f64,

    /// Least time between two mints of one credential for unchanged inputs; a token's floor is
    /// the longer of this and a tenth of its lifetime (guards against renewal loops).
    #[arg(long, env = "ACO_MIN_MINT_INTERVAL", default_value = "30s", value_parser = duration_arg)]
    pub min_mint_interval: Duration,

    /// How long a graceful shutdown waits for in-flight reconciles before exiting anyway.
    #[arg(long, env = "ACO_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = duration_arg)]
    pub shutdown_timeout: Duration,

    /// Token requests allowed at once per host before the rate limit applies.
    #[arg(long, env = "ACO_TOKEN_RATE_LIMIT_BURST", default_value_t = 20)]
    pub token_rate_limit_burst: u32,

    /// Rotate client secrets of credentials with `clientSecretRotation` (this writes their source
    /// Secrets, which needs the `update` verb on Secrets: chart value clientSecretRotation.enabled).
    #[arg(long, env = "ACO_CLIENT_SECRET_ROTATION", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub client_secret_rotation: bool,

    /// How long a new client secret may take before IMS accepts it; past it, the rotation
    /// deletes the new secret and keeps the current one.
    #[arg(long, env = "ACO_CLIENT_SECRET_VERIFY_TIMEOUT", default_value = "2m", value_parser = duration_arg)]
    pub client_secret_verify_timeout: Duration,
}

impl RunArgs {
    pub fn namespaces(&self) -> Namespaces {
        let list: Vec<String> = self.namespaces.iter().map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect();
        if list.is_empty() { Namespaces::All } else { Namespaces::List(list) }
    }
}

fn duration_arg(text: &str) -> Result<Duration, String> {
    positive_duration(text).ok_or_else(|| format!("{text:?} is not a duration like 30s, 5m or 1h"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_flags_parse_with_defaults() {
        let cli = Cli::try_parse_from(["aco", "run", "--namespaces", "a,b"]).expect("parses");
        let Command::Run(args) = cli.command else { panic!("run expected") };
        assert!(matches!(args.namespaces(), Namespaces::List(l) if l == ["a", "b"]));
        assert_eq!(args.tokens.allowed_token_hosts, ["*.adobelogin.com", "api.adobe.io"]);
        assert!(!args.client_secret_rotation, "rotation is opt-in");
        assert_eq!(args.client_secret_verify_timeout, Duration::from_secs(120));
        assert_eq!(args.tokens.token_request_timeout, Duration::from_secs(30));
        assert!(!args.leader_election);
        assert_eq!(args.min_mint_interval, crate::schedule::DEFAULT_MIN_MINT_INTERVAL);
        assert!(Cli::try_parse_from(["aco", "run", "--token-request-timeout", "soon"]).is_err());
        let cli = Cli::try_parse_from(["aco", "run", "--leader-election"]).expect("bare flag");
        let Command::Run(args) = cli.command else { panic!("run expected") };
        assert!(args.leader_election);
    }

    #[test]
    fn a_credential_comes_from_the_cluster_by_name_or_from_files() {
        let cli = Cli::try_parse_from(["aco", "login", "user-api", "-n", "team-a", "--apply"]).expect("by name");
        let Command::Login(args) = cli.command else { panic!("login expected") };
        assert_eq!(args.credential.name.as_deref(), Some("user-api"));
        assert_eq!(args.redirect_uri.as_str(), "https://localhost:8443/callback");
        assert_eq!(args.timeout, Duration::from_secs(300));
        let cli = Cli::try_parse_from(["aco", "login", "user-api", "--output", "t.yaml"]).expect("into a file");
        let Command::Login(args) = cli.command else { panic!("login expected") };
        assert_eq!(args.output, Some(PathBuf::from("t.yaml")));
        assert!(Cli::try_parse_from(["aco", "login", "x", "--apply", "--output", "t.yaml"]).is_err(), "one place");
        assert!(Cli::try_parse_from(["aco", "check", "-f", "c.yaml", "--from-cluster"]).is_ok());
        assert!(Cli::try_parse_from(["aco", "check"]).is_err(), "a name or files");
        assert!(Cli::try_parse_from(["aco", "check", "x", "-f", "c.yaml"]).is_err(), "not both");
        assert!(Cli::try_parse_from(["aco", "check", "x", "--from-cluster"]).is_err(), "a name reads the cluster");
    }
}
