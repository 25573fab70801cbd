//! adobe-credential-operator: mints Adobe IMS (and other OAuth2) access tokens from client
//! credentials held in Secrets, writes them into target Secrets and renews them before expiry
//! and whenever the source Secrets change.
#![forbid(unsafe_code)]

pub mod check;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod credential_input;
pub mod decision;
pub mod error;
pub mod flows;
pub mod health;
pub mod http;
pub mod index;
pub mod leader;
pub mod login;
pub mod metrics;
pub mod mint_guard;
pub mod names;
pub mod notice;
pub mod rate_limit;
pub mod refresh_state;
pub mod rollout;
pub mod rotation;
pub mod schedule;
pub mod scope;
pub mod secret_value;
pub mod source;
pub mod status;
pub mod target;
pub mod telemetry;
pub mod time_format;
pub mod token;
