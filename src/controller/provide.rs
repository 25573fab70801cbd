//! Providing the token: read the facts (target Secret, inputs, what is remembered), take the
//! decision, act on it (keep, repair, restore, mint). Minting happens only where the decision
//! and the mint guard allow it; templates and key ownership are checked before, so a broken
//! template or a taken key never burns a token.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::runtime::reflector::ObjectRef;
use tracing::warn;

use super::Context;
use crate::crd::AdobeCredential;
use crate::decision::{self, Decision, Facts};
use crate::error::{Error, Result, Retry};
use crate::flows::{self, Flow};
use crate::mint_guard;
use crate::refresh_state::{self, Chain};
use crate::schedule::{Renewal, RenewalPolicy};
use crate::secret_value::SecretValue;
use crate::target::{self, StoredToken, TargetState};

/// A valid token is in the target.
pub(super) struct Done {
    pub token: StoredToken,
    pub renewal: Renewal,
    pub minted: bool,
    pub repaired: bool,
    /// The target held a token for other inputs (rotation picked up).
    pub inputs_changed: bool,
    /// Key of the first client secret of the source Secret.
    pub primary_secret_key: Option<String>,
    /// What was cleaned off the inputs (for status and an Event).
    pub notes: Vec<String>,
}

/// No valid token could be provided; what is known about the one left in place.
pub(super) struct Failure {
    pub error: Error,
    pub last_good: Option<StoredToken>,
    pub current_inputs: bool,
}

/// The facts a decision is taken from.
struct Observed {
    inputs: Box<dyn Flow>,
    revision: String,
    /// The target's token, if the operator can have written it.
    last_good: Option<StoredToken>,
    /// `last_good` was minted from the current inputs.
    current_inputs: bool,
    /// The keys the target gets, rendered with `last_good` or a placeholder of real size.
    probe_data: BTreeMap<String, String>,
    target_up_to_date: bool,
}

impl Observed {
    fn failure(&self, error: Error) -> Failure {
        Failure { error, last_good: self.last_good.clone(), current_inputs: self.current_inputs }
    }

    fn done(&self, token: StoredToken, renewal: Renewal, minted: bool, repaired: bool) -> Done {
        Done {
            inputs_changed: minted && self.last_good.is_some() && !self.current_inputs,
            token,
            renewal,
            minted,
            repaired,
            primary_secret_key: self.inputs.client().secrets.first().map(|(key, _)| key.clone()),
            notes: self.inputs.client().notes.clone(),
        }
    }
}

/// Makes sure the target holds a valid token for the current inputs, minting only when the
/// decision calls for it.
pub(super) async fn ensure_token(
    cred: &AdobeCredential,
    secrets: &Api<Secret>,
    ctx: &Context,
    now: Timestamp,
    renewal: RenewalPolicy,
) -> Result<Done, Failure> {
    let seen = observe(cred, secrets, now).await?;
    let key = ObjectRef::from_obj(cred);
    let (held, last_mint) =
        ctx.states.update(&key, |s| (s.held().map(|(t, w)| (t.clone(), w)), s.last_mint().cloned()));
    let facts = Facts {
        now,
        revision: &seen.revision,
        target_token: seen.last_good.as_ref(),
        target_up_to_date: seen.target_up_to_date,
        held: held.as_ref().map(|(token, _)| token),
        last_mint: last_mint.as_ref(),
        renewal,
    };
    let decision = decision::decide(&facts);
    let held_written = held.as_ref().is_some_and(|(_, written)| *written);
    act(cred, secrets, ctx, &seen, &facts, decision, held_written).await.map_err(|error| seen.failure(error))
}

/// Reads the target and the inputs and checks, before anything is minted, that a token could be
/// written: the target is ours to write, the templates render within budget, no key is taken.
async fn observe(cred: &AdobeCredential, secrets: &Api<Secret>, now: Timestamp) -> Result<Observed, Failure> {
    let existing = secrets.get_opt(&cred.target_name()).await.map_err(|e| Failure {
        error: Error::kube("reading the target Secret")(e),
        last_good: None,
        current_inputs: false,
    })?;
    let state = target::inspect(cred, existing);
    let last_good = match &state {
        TargetState::Present { token, .. } => token.clone().filter(|t| decision::plausible(t, now)),
        _ => None,
    };
    let inputs = flows::resolve(secrets, cred).await.map_err(|error| Failure {
        error,
        last_good: last_good.clone(),
        current_inputs: false,
    })?;
    let revision = inputs.revision();
    let current_inputs = last_good.as_ref().is_some_and(|t| t.revision == revision);
    let mut seen =
        Observed { inputs, revision, last_good, current_inputs, probe_data: BTreeMap::new(), target_up_to_date: false };
    let target = writable_target(cred, state).map_err(|e| seen.failure(e))?;
    let probe = seen.last_good.clone().unwrap_or_else(|| placeholder_token(now));
    seen.probe_data = target::render_data(cred, &probe, &*seen.inputs).map_err(|e| seen.failure(e))?;
    if let Some((key, manager)) = target.as_ref().and_then(|s| target::foreign_key(cred, s, seen.probe_data.keys())) {
        return Err(seen.failure(Error::TargetKeyConflict { name: cred.target_name(), key, manager }));
    }
    seen.target_up_to_date = match (&seen.last_good, &target) {
        (Some(token), Some(secret)) if seen.current_inputs => {
            target::is_up_to_date(cred, secret, token, &seen.probe_data)
        }
        _ => false,
    };
    Ok(seen)
}

/// The existing target Secret, if the operator may write it.
fn writable_target(cred: &AdobeCredential, state: TargetState) -> Result<Option<Secret>> {
    match state {
        TargetState::Conflict => Err(Error::TargetConflict { name: cred.target_name() }),
        TargetState::ClusterCopy(cluster_credential) => {
            Err(Error::TargetIsClusterCopy { name: cred.target_name(), cluster_credential })
        }
        TargetState::NotOpaque(type_) => Err(Error::TargetNotOpaque { name: cred.target_name(), type_ }),
        TargetState::Missing => Ok(None),
        TargetState::Present { secret, .. } => Ok(Some(*secret)),
    }
}

async fn act(
    cred: &AdobeCredential,
    secrets: &Api<Secret>,
    ctx: &Context,
    seen: &Observed,
    facts: &Facts<'_>,
    decision: Decision<'_>,
    held_written: bool,
) -> Result<Done> {
    let now = facts.now;
    let done = |token: &StoredToken, renewal, minted, repaired| seen.done(token.clone(), renewal, minted, repaired);
    let key = ObjectRef::from_obj(cred);
    match decision {
        Decision::Keep { token, renewal } => {
            ctx.states.update(&key, |s| s.hold(token, true));
            Ok(done(token, renewal, false, false))
        }
        Decision::Repair { token, renewal } => {
            write_target(cred, secrets, ctx, token, &seen.probe_data).await?;
            Ok(done(token, renewal, false, true))
        }
        Decision::Restore { token, renewal } => {
            let data = target::render_data(cred, token, &*seen.inputs)?;
            write_target(cred, secrets, ctx, token, &data).await?;
            // A token whose first write failed is announced as minted now; else it is a repair.
            Ok(done(token, renewal, !held_written, held_written))
        }
        Decision::WaitUntil { at, .. } => {
            let wait = at.duration_since(now).unsigned_abs();
            Err(Error::MintRateLimited { retry_at: at, spent: None, wait })
        }
        Decision::Mint { .. } => {
            let token = mint(ctx, cred, secrets, &*seen.inputs, seen.revision.clone(), now).await?;
            let data = target::render_data(cred, &token, &*seen.inputs)?;
            write_target(cred, secrets, ctx, &token, &data).await?;
            let renewal = decision::renewal_of(&token, &facts.renewal);
            Ok(seen.done(token, renewal, true, false))
        }
    }
}

fn placeholder_token(now: Timestamp) -> StoredToken {
    StoredToken {
        // As long as real tokens get (Adobe's are about 1–2 KiB): the size budgets hold for them.
        access_token: SecretValue::new("x".repeat(4096)),
        token_type: "bearer".into(),
        issued_at: now,
        expires_at: now,
        revision: String::new(),
        client_secret_key: None,
    }
}

/// One token request, if the mint guard allows it.
async fn mint(
    ctx: &Context,
    cred: &AdobeCredential,
    secrets: &Api<Secret>,
    inputs: &dyn Flow,
    revision: String,
    now: Timestamp,
) -> Result<StoredToken> {
    let key = ObjectRef::from_obj(cred);
    if let Err(refusal) = ctx.states.update(&key, |s| s.may_mint(now, &revision, ctx.min_mint_interval)) {
        ctx.metrics.mint_guard_tripped(key.namespace.as_deref().unwrap_or_default(), &key.name);
        let wait = refusal.retry_at.duration_since(now).unsigned_abs();
        let spent = refusal.budget_spent.then_some(mint_guard::BUDGET);
        return Err(Error::MintRateLimited { retry_at: refusal.retry_at, spent, wait });
    }
    let chain = inputs.chain_revision();
    let refresh_token = match inputs.refresh_token_lifetime() {
        Some(lifetime) => {
            match (
                refresh_state::load(secrets, cred, &[&chain, &revision], lifetime, now).await?,
                inputs.refused_chain(),
            ) {
                (Chain::Refused, Some(refused)) => return Err(refused),
                (Chain::Continue(token), _) => Some(token),
                _ => None,
            }
        }
        None => None,
    };
    let minted = match request(ctx, inputs, refresh_token.as_ref()).await {
        Err(err) if err.retry() == Retry::AfterInputChange && inputs.refused_chain().is_some() => {
            // Persisted, so that neither a retry nor a restarted operator asks again.
            if let Err(not_saved) = refresh_state::mark_refused(secrets, cred, &chain).await {
                warn!(error = %not_saved, "could not persist that the refresh token chain was refused");
            }
            return Err(err);
        }
        minted => minted?,
    };
    let token = StoredToken {
        access_token: minted.access_token,
        token_type: minted.token_type,
        issued_at: minted.issued_at,
        expires_at: minted.expires_at,
        revision,
        client_secret_key: Some(minted.client_secret_key),
    };
    ctx.states.update(&key, |s| s.minted(&token));
    if let Some(refresh_token) = &minted.refresh_token {
        // Persisted before anything else: the refresh token just used is already dead.
        refresh_state::save(secrets, cred, refresh_token, &chain, minted.issued_at).await?;
    }
    Ok(token)
}

/// The token request itself, after the per-host rate limit, measured.
async fn request(
    ctx: &Context,
    inputs: &dyn Flow,
    refresh_token: Option<&SecretValue>,
) -> Result<crate::token::MintedToken> {
    if let Some(host) = reqwest::Url::parse(inputs.endpoint()).ok().and_then(|u| u.host_str().map(str::to_owned)) {
        let _queued = ctx.metrics.mint_queued();
        ctx.rate_limiter.acquire(&host).await;
    }
    ctx.leadership.check()?; // after the rate limit's queue, which may take a while
    let _in_flight = ctx.metrics.mint_in_flight();
    let started = std::time::Instant::now();
    let minted = inputs.mint(&ctx.tokens, refresh_token).await;
    let outcome = minted.as_ref().map_or_else(Error::reason, |_| "ok");
    ctx.metrics.mint_finished(inputs.name(), outcome, started.elapsed());
    minted
}

async fn write_target(
    cred: &AdobeCredential,
    secrets: &Api<Secret>,
    ctx: &Context,
    token: &StoredToken,
    data: &BTreeMap<String, String>,
) -> Result<()> {
    ctx.leadership.check()?;
    let version = target::apply(secrets, cred, token, data).await?;
    ctx.states.update(&ObjectRef::from_obj(cred), |s| s.wrote(token, version));
    Ok(())
}
