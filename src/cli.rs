//! Command line: `crd` prints the CRD, `run` runs the controller. Every flag of `run` also reads
//! an environment variable, which is how the Helm chart configures the operator.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::controller::Namespaces;
use crate::schedule::parse_duration;

#[derive(Debug, Parser)]
#[command(name = "adobe-credential-operator", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the AdobeCredential CustomResourceDefinition as YAML.
    Crd,
    /// Run the controller.
    Run(RunArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Namespaces to serve, comma-separated; empty serves all namespaces.
    #[arg(long, env = "ACO_NAMESPACES", value_delimiter = ',', num_args = 0..)]
    pub namespaces: Vec<String>,

    /// Hosts token requests may go to: exact names or `*.domain` patterns (SSRF guard).
    #[arg(long, env = "ACO_ALLOWED_TOKEN_HOSTS", value_delimiter = ',', default_value = "*.adobelogin.com")]
    pub allowed_token_hosts: Vec<String>,

    /// PEM file of extra CA certificates trusted for token endpoints, besides the built-in roots.
    #[arg(long, env = "ACO_EXTRA_CA_FILE")]
    pub extra_ca_file: Option<PathBuf>,

    /// Timeout of one token request, e.g. 30s.
    #[arg(long, env = "ACO_TOKEN_REQUEST_TIMEOUT", default_value = "30s", value_parser = duration_arg)]
    pub token_request_timeout: Duration,

    /// Credentials reconciled at once.
    #[arg(long, env = "ACO_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,

    /// Log format.
    #[arg(long, env = "ACO_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter, e.g. `info` or `adobe_credential_operator=debug,kube=info`.
    #[arg(long, env = "ACO_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Name of this replica in Events (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,
}

impl RunArgs {
    pub fn namespaces(&self) -> Namespaces {
        let list: Vec<String> = self.namespaces.iter().map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).collect();
        if list.is_empty() { Namespaces::All } else { Namespaces::List(list) }
    }
}

fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text).ok_or_else(|| format!("{text:?} is not a duration like 30s, 5m or 1h"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_flags_parse_with_defaults() {
        let cli = Cli::try_parse_from(["aco", "run", "--namespaces", "a,b"]).expect("parses");
        let Command::Run(args) = cli.command else { panic!("run expected") };
        assert!(matches!(args.namespaces(), Namespaces::List(l) if l == ["a", "b"]));
        assert_eq!(args.allowed_token_hosts, ["*.adobelogin.com"]);
        assert_eq!(args.token_request_timeout, Duration::from_secs(30));
        assert!(Cli::try_parse_from(["aco", "run", "--token-request-timeout", "soon"]).is_err());
    }
}
