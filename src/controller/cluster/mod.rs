//! ClusterAdobeCredential: one integration, one mint per lifetime, the token in many namespaces.
//!
//! A ClusterAdobeCredential mints through an AdobeCredential it owns in the operator's
//! cluster-credential namespace, its *minter* (as a Deployment runs pods through a ReplicaSet).
//! Minting, renewal, the mint guard, refresh state and their reporting are therefore the
//! namespaced code paths, and tenants never see the source Secrets. This module keeps the minter
//! in step with the spec and copies the minter's target Secret into every selected namespace.

mod plan;
mod report;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt, stream};
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, PartialObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, instrument, warn};

use super::Context;
use crate::crd::{AdobeCredential, AdobeCredentialSpec, ClusterAdobeCredential, CreationPolicy, TargetSpec};
use crate::decision;
use crate::error::Error;
use crate::names::{CLUSTER_CREDENTIAL_LABEL, CLUSTER_FINALIZER, FIELD_MANAGER, MANAGED_BY_LABEL, annotation};
use crate::target::{self, StoredToken, TargetState};
use plan::{Copy, Known, Step, Wanted};

/// Namespaces listed by name in status when they fail.
const MAX_LISTED_FAILURES: usize = 10;
/// Copies written at once.
const WRITE_CONCURRENCY: usize = 16;
/// Field manager of the copies.
const COPY_MANAGER: &str = "adobe-credential-operator/cluster";

/// Whether the namespace and copy caches hold a complete list. Until both do, a distribution
/// would take every namespace for unselected and every copy for missing.
#[derive(Default)]
struct Synced {
    namespaces: AtomicBool,
    copies: AtomicBool,
}

/// Raises `flag` once a watch has delivered its first complete list.
fn mark_listed<K>(event: &watcher::Event<K>, flag: &AtomicBool) {
    if matches!(event, watcher::Event::InitDone) {
        flag.store(true, Ordering::Release);
    }
}

impl Synced {
    fn both(&self) -> bool {
        self.namespaces.load(Ordering::Acquire) && self.copies.load(Ordering::Acquire)
    }
}

/// What the distribution shares between reconciles.
struct Distribution {
    ctx: Arc<Context>,
    /// The cluster-credential namespace: minters and source Secrets live here.
    namespace: String,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    copies: Store<PartialObjectMeta<Secret>>,
    synced: Arc<Synced>,
    /// `(cluster credential, namespace)` → what this replica wrote there and its resourceVersion.
    known: Mutex<HashMap<(String, String), Remembered>>,
}

/// The minter's valid token and the keys every copy gets.
struct Minted {
    token: StoredToken,
    data: BTreeMap<String, ByteString>,
    wanted: Wanted,
}

#[derive(Debug, Clone)]
struct Remembered {
    /// The version this replica's write produced; None while the write is under way.
    resource_version: Option<String>,
    known: Known,
}

impl Remembered {
    /// Whether `meta` is the copy this replica wrote: its version, or (while the write is under
    /// way) the token and keys it is writing.
    fn is_echo(&self, meta: &PartialObjectMeta<Secret>) -> bool {
        let Known::Written { fingerprint, data_hash } = &self.known else { return false };
        match &self.resource_version {
            Some(version) => meta.resource_version().as_ref() == Some(version),
            None => {
                let note = |key: &str| meta.annotations().get(key);
                note(annotation::TOKEN_FINGERPRINT) == Some(fingerprint)
                    && note(annotation::DATA_HASH) == Some(data_hash)
            }
        }
    }
}

/// Runs the ClusterAdobeCredential controller until shutdown.
pub async fn run(ctx: Arc<Context>, namespace: String, concurrency: u16) {
    let client = ctx.client.clone();
    let synced = Arc::new(Synced::default());
    let (namespaces, namespace_writer) = reflector::store();
    let namespaces_listed = synced.clone();
    let all_namespaces = Api::<PartialObjectMeta<Namespace>>::all(client.clone());
    let namespace_events = watcher(all_namespaces, watcher::Config::default())
        .default_backoff()
        .reflect(namespace_writer)
        .inspect_ok(move |event| mark_listed(event, &namespaces_listed.namespaces))
        .touched_objects();
    let (copies, copy_writer) = reflector::store();
    let copy_config = watcher::Config::default().labels(CLUSTER_CREDENTIAL_LABEL);
    let copies_listed = synced.clone();
    let copy_events = watcher(Api::<PartialObjectMeta<Secret>>::all(client.clone()), copy_config)
        .default_backoff()
        .reflect(copy_writer)
        .inspect_ok(move |event| mark_listed(event, &copies_listed.copies));
    let known = Mutex::default();
    let dist = Arc::new(Distribution { ctx: ctx.clone(), namespace, namespaces, copies, synced, known });

    let controller = Controller::new(Api::<ClusterAdobeCredential>::all(client.clone()), watcher::Config::default());
    let all_credentials = controller.store();
    let from_copies = dist.clone();
    let mut shutdown = ctx.shutdown.clone();
    controller
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .owns(Api::<AdobeCredential>::namespaced(client.clone(), &dist.namespace), watcher::Config::default())
        .watches_stream(namespace_events, move |_| {
            all_credentials.state().iter().map(|c| ObjectRef::from_obj(&**c)).collect::<Vec<_>>()
        })
        .reconcile_on(
            copy_events
                .flat_map(move |event| stream::iter(event.map(|e| from_copies.copy_changed(&e)).unwrap_or_default())),
        )
        .graceful_shutdown_on(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .run(reconcile, error_policy, dist)
        .for_each(|result| async move {
            match result {
                Ok((obj, action)) => debug!(cluster_credential = %obj.name, ?action, "reconciled"),
                Err(err) => warn!(error = %err, "cluster controller error"),
            }
        })
        .await;
}

impl Distribution {
    fn known(&self) -> MutexGuard<'_, HashMap<(String, String), Remembered>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cluster credentials a change of one of their copies concerns. The echo of this
    /// replica's own write is no news; any other write or a deletion makes the copy foreign, to be
    /// written again.
    fn copy_changed(
        &self,
        event: &watcher::Event<PartialObjectMeta<Secret>>,
    ) -> Vec<ObjectRef<ClusterAdobeCredential>> {
        let (meta, after_start) = match event {
            watcher::Event::Apply(meta) | watcher::Event::Delete(meta) => (meta, true),
            watcher::Event::InitApply(meta) => (meta, false),
            watcher::Event::Init | watcher::Event::InitDone => return Vec::new(),
        };
        let Some(owner) = meta.annotations().get(annotation::CLUSTER_CREDENTIAL).cloned() else { return Vec::new() };
        let key = (owner.clone(), meta.namespace().unwrap_or_default());
        let mut known = self.known();
        if let (watcher::Event::Apply(_), Some(remembered)) = (event, known.get_mut(&key))
            && remembered.is_echo(meta)
        {
            // The event of a write under way may come before the write returns: learn its version.
            remembered.resource_version = meta.resource_version();
            return Vec::new();
        }
        if after_start {
            debug!(namespace = %key.1, version = ?meta.resource_version(), "a copy was changed by someone else");
            known.insert(key, Remembered { resource_version: None, known: Known::Foreign });
        }
        vec![ObjectRef::new(&owner)]
    }

    fn minter_name(cc: &ClusterAdobeCredential) -> String {
        format!("cluster-{}", cc.name_any())
    }
}

#[instrument(skip_all, fields(cluster_credential = %cc.name_any()))]
async fn reconcile(
    cc: Arc<ClusterAdobeCredential>,
    dist: Arc<Distribution>,
) -> Result<Action, finalizer::Error<Error>> {
    let api: Api<ClusterAdobeCredential> = Api::all(dist.ctx.client.clone());
    finalizer(&api, CLUSTER_FINALIZER, cc, |event| async {
        match event {
            finalizer::Event::Apply(cc) => distribute(&cc, &dist).await,
            finalizer::Event::Cleanup(cc) => clean_up(&cc, &dist).await,
        }
    })
    .await
}

fn error_policy(cc: Arc<ClusterAdobeCredential>, err: &finalizer::Error<Error>, dist: Arc<Distribution>) -> Action {
    dist.ctx.metrics.reconcile_failed("ClusterReconcileFailed");
    warn!(cluster_credential = %cc.name_any(), error = %err, "cluster reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// Read → decide → act → report, for one cluster credential.
async fn distribute(cc: &ClusterAdobeCredential, dist: &Distribution) -> Result<Action, Error> {
    if !dist.synced.both() {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let minter = match ensure_minter(cc, dist).await {
        Ok(minter) => minter,
        Err(error) => {
            let status = report::failed_status(cc, &error);
            report::patch_status(cc, dist, status).await?;
            return Ok(Action::requeue(Duration::from_secs(300)));
        }
    };
    let minted = read_minted(&minter, dist).await?;
    let wanted = minted.as_ref().map(|m| &m.wanted);
    let selected = dist.selected(cc);
    let copies = dist.copies_of(cc);
    let remove_unselected = creation_policy(cc) == CreationPolicy::Owner;
    let known = dist.known_of(cc);
    let steps = plan::steps(&selected, &copies, wanted, &known, remove_unselected);
    let failures = execute(cc, dist, &steps, minted.as_ref()).await?;
    report::report(cc, dist, &minter, &selected, wanted, &failures, &steps).await?;
    Ok(Action::requeue(Duration::from_secs(3600)))
}

fn creation_policy(cc: &ClusterAdobeCredential) -> CreationPolicy {
    cc.spec.target.as_ref().map(|t| t.creation_policy).unwrap_or_default()
}

/// The AdobeCredential that mints for `cc`, created or brought in step with its spec.
async fn ensure_minter(cc: &ClusterAdobeCredential, dist: &Distribution) -> Result<AdobeCredential, Error> {
    let api: Api<AdobeCredential> = Api::namespaced(dist.ctx.client.clone(), &dist.namespace);
    let name = Distribution::minter_name(cc);
    let spec = minter_spec(cc);
    let existing = api.get_opt(&name).await.map_err(Error::kube("reading the minting AdobeCredential"))?;
    if let Some(minter) = existing {
        let ours = minter.owner_references().iter().any(|o| Some(&o.uid) == cc.uid().as_ref());
        if !ours {
            return Err(Error::MinterConflict { namespace: dist.namespace.clone(), name });
        }
        if minter.spec == spec {
            return Ok(minter);
        }
    }
    dist.ctx.leadership.check()?;
    let body = json!({
        "apiVersion": AdobeCredential::api_version(&()),
        "kind": AdobeCredential::kind(&()),
        "metadata": {
            "name": name,
            "namespace": dist.namespace,
            "labels": { MANAGED_BY_LABEL: FIELD_MANAGER },
            "ownerReferences": cc.controller_owner_ref(&()).into_iter().collect::<Vec<_>>(),
        },
        "spec": spec,
    });
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await
        .map_err(Error::kube("writing the minting AdobeCredential"))
}

/// The minter's spec: the cluster credential's flow, renewal and key layout, with a target of
/// its own in the cluster-credential namespace (restarts happen per namespace, not there).
fn minter_spec(cc: &ClusterAdobeCredential) -> AdobeCredentialSpec {
    let spec = &cc.spec;
    let layout = spec.target.clone().unwrap_or_default();
    AdobeCredentialSpec {
        oauth_server_to_server: spec.oauth_server_to_server.clone(),
        service_account_jwt: spec.service_account_jwt.clone(),
        password_grant: spec.password_grant.clone(),
        // User authentication is per user and namespace, not fanned out by a cluster credential.
        oauth_web_app: None,
        target: Some(TargetSpec {
            name: Some(format!("{}-token", Distribution::minter_name(cc))),
            creation_policy: CreationPolicy::Owner,
            ..layout
        }),
        renewal: spec.renewal.clone(),
        rollout_restart_targets: Vec::new(),
    }
}

/// The minter's token and the keys of its target Secret, when they hold a valid token.
async fn read_minted(minter: &AdobeCredential, dist: &Distribution) -> Result<Option<Minted>, Error> {
    let secrets: Api<Secret> = Api::namespaced(dist.ctx.client.clone(), &dist.namespace);
    let existing = secrets.get_opt(&minter.target_name()).await.map_err(Error::kube("reading the minted token"))?;
    let now = Timestamp::now();
    Ok(match target::inspect(minter, existing) {
        TargetState::Present { token: Some(token), secret }
            if decision::plausible(&token, now) && now < token.expires_at =>
        {
            let data = secret.data.unwrap_or_default();
            let wanted = Wanted { fingerprint: token.fingerprint(), data_hash: plan::data_hash(&data) };
            Some(Minted { token, data, wanted })
        }
        _ => None,
    })
}

impl Distribution {
    /// The namespaces `cc` selects now (not those being deleted).
    fn selected(&self, cc: &ClusterAdobeCredential) -> BTreeSet<String> {
        let selector = cc.spec.namespace_selector.as_ref();
        self.namespaces
            .state()
            .iter()
            .filter(|ns| ns.metadata.deletion_timestamp.is_none())
            .filter(|ns| plan::selects(selector, &cc.spec.namespaces, &ns.name_any(), ns.labels()))
            .map(|ns| ns.name_any())
            .collect()
    }

    /// The copies of `cc`'s target Secret name, whoever wrote them.
    fn copies_of(&self, cc: &ClusterAdobeCredential) -> Vec<Copy> {
        let (name, target) = (cc.name_any(), cc.target_name());
        self.copies
            .state()
            .iter()
            .filter(|s| s.name_any() == target)
            .map(|s| {
                let note = |key: &str| s.annotations().get(key).cloned();
                Copy {
                    namespace: s.namespace().unwrap_or_default(),
                    ours: note(annotation::CLUSTER_CREDENTIAL).as_deref() == Some(name.as_str()),
                    fingerprint: note(annotation::TOKEN_FINGERPRINT),
                    data_hash: note(annotation::DATA_HASH),
                }
            })
            .collect()
    }

    fn known_of(&self, cc: &ClusterAdobeCredential) -> HashMap<String, Known> {
        let name = cc.name_any();
        self.known().iter().filter(|((c, _), _)| *c == name).map(|((_, ns), r)| (ns.clone(), r.known.clone())).collect()
    }

    fn remember(&self, cc: &ClusterAdobeCredential, namespace: &str, remembered: Option<Remembered>) {
        let key = (cc.name_any(), namespace.to_owned());
        match remembered {
            Some(r) => self.known().insert(key, r),
            None => self.known().remove(&key),
        };
    }
}

/// Carries out the steps, many at once; returns the namespaces that failed, with why.
async fn execute(
    cc: &ClusterAdobeCredential,
    dist: &Distribution,
    steps: &[Step],
    minted: Option<&Minted>,
) -> Result<Vec<(String, Error)>, Error> {
    if !steps.is_empty() {
        dist.ctx.leadership.check()?;
    }
    let results: Vec<(String, Result<(), Error>)> = stream::iter(steps.iter().cloned())
        .map(|step| run_step(cc, dist, step, minted))
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    Ok(results.into_iter().filter_map(|(ns, r)| r.err().map(|e| (ns, e))).collect())
}

/// One step; returns its namespace and outcome.
async fn run_step(
    cc: &ClusterAdobeCredential,
    dist: &Distribution,
    step: Step,
    minted: Option<&Minted>,
) -> (String, Result<(), Error>) {
    match (step, minted) {
        (Step::Create(ns), Some(minted)) => {
            let written = write_copy(cc, dist, &ns, true, minted).await;
            (ns, written)
        }
        (Step::Update(ns), Some(minted)) => {
            let written = write_copy(cc, dist, &ns, false, minted).await;
            (ns, written)
        }
        // The plan writes only when there is a token to write.
        (Step::Create(ns) | Step::Update(ns), None) => (ns, Ok(())),
        (Step::Remove(ns), _) => {
            let removed = remove_copy(cc, dist, &ns).await;
            (ns, removed)
        }
    }
}

async fn write_copy(
    cc: &ClusterAdobeCredential,
    dist: &Distribution,
    namespace: &str,
    create: bool,
    minted: &Minted,
) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(dist.ctx.client.clone(), namespace);
    let copy = copy_secret(cc, namespace, minted);
    let name = cc.target_name();
    let wanted = &minted.wanted;
    let known = Known::Written { fingerprint: wanted.fingerprint.clone(), data_hash: wanted.data_hash.clone() };
    dist.remember(cc, namespace, Some(Remembered { resource_version: None, known: known.clone() }));
    let written = if create {
        let params = PostParams { field_manager: Some(COPY_MANAGER.into()), ..Default::default() };
        secrets.create(&params, &copy).await
    } else {
        secrets.patch(&name, &PatchParams::apply(COPY_MANAGER).force(), &Patch::Apply(&copy)).await
    };
    let written = match written {
        Ok(written) => {
            debug!(namespace, create, version = ?written.resource_version(), "wrote a namespace's copy");
            written
        }
        Err(err) => {
            dist.remember(cc, namespace, None);
            return Err(match err {
                kube::Error::Api(status) if create && status.code == 409 => {
                    Error::NamespaceConflict { namespace: namespace.to_owned(), name }
                }
                other => Error::kube("writing a namespace's copy of the token")(other),
            });
        }
    };
    dist.remember(cc, namespace, Some(Remembered { resource_version: written.resource_version(), known }));
    restart_consumers(cc, dist, namespace, &minted.token).await;
    Ok(())
}

/// The rollout restart targets that exist in `namespace`, restarted for a new token.
async fn restart_consumers(cc: &ClusterAdobeCredential, dist: &Distribution, namespace: &str, token: &StoredToken) {
    let targets = &cc.spec.rollout_restart_targets;
    if targets.is_empty() {
        return;
    }
    let restarts = crate::rollout::restart_consumers(&dist.ctx.client, namespace, targets, token).await;
    for restart in restarts.iter().filter(|r| r.restarted) {
        info!(namespace, kind = ?restart.status.kind, name = %restart.status.name, "restarted a consumer for the new token");
    }
}

/// A namespace's copy: the minter's keys, with the token's annotations and this resource's name.
fn copy_secret(cc: &ClusterAdobeCredential, namespace: &str, minted: &Minted) -> Secret {
    let Minted { token, data, wanted } = minted;
    let mut secret = Secret { data: Some(data.clone()), type_: Some("Opaque".into()), ..Default::default() };
    let meta = &mut secret.metadata;
    meta.name = Some(cc.target_name());
    meta.namespace = Some(namespace.to_owned());
    meta.labels = Some(BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), FIELD_MANAGER.to_owned()),
        (CLUSTER_CREDENTIAL_LABEL.to_owned(), target::bounded(&cc.name_any(), 63)),
    ]));
    meta.annotations = Some(BTreeMap::from([
        (annotation::CLUSTER_CREDENTIAL.to_owned(), cc.name_any()),
        (annotation::TOKEN_FINGERPRINT.to_owned(), wanted.fingerprint.clone()),
        (annotation::DATA_HASH.to_owned(), wanted.data_hash.clone()),
        (annotation::ISSUED_AT.to_owned(), token.issued_at.to_string()),
        (annotation::EXPIRES_AT.to_owned(), token.expires_at.to_string()),
    ]));
    if creation_policy(cc) == CreationPolicy::Owner {
        meta.owner_references = cc.controller_owner_ref(&()).map(|o| vec![o]);
    }
    secret
}

async fn remove_copy(cc: &ClusterAdobeCredential, dist: &Distribution, namespace: &str) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(dist.ctx.client.clone(), namespace);
    dist.remember(cc, namespace, None);
    match secrets.delete(&cc.target_name(), &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(Error::kube("removing a namespace's copy of the token")(err)),
    }
}

/// Deletion: copies removed by policy, the minter deleted, nothing remembered.
async fn clean_up(cc: &ClusterAdobeCredential, dist: &Distribution) -> Result<Action, Error> {
    if !dist.synced.both() {
        return Err(Error::CachesNotSynced);
    }
    dist.ctx.leadership.check()?;
    if creation_policy(cc) == CreationPolicy::Owner {
        let ours: Vec<String> = dist.copies_of(cc).into_iter().filter(|c| c.ours).map(|c| c.namespace).collect();
        let removals = stream::iter(ours).map(|ns| async move { remove_copy(cc, dist, &ns).await });
        removals.buffer_unordered(WRITE_CONCURRENCY).try_collect::<Vec<_>>().await?;
    }
    let minters: Api<AdobeCredential> = Api::namespaced(dist.ctx.client.clone(), &dist.namespace);
    match minters.delete(&Distribution::minter_name(cc), &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(err) => return Err(Error::kube("deleting the minting AdobeCredential")(err)),
    }
    let name = cc.name_any();
    dist.known().retain(|(c, _), _| *c != name);
    dist.ctx.metrics.forget_cluster(&name);
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_meta(version: &str, fingerprint: &str) -> PartialObjectMeta<Secret> {
        let mut meta = PartialObjectMeta::<Secret>::default();
        meta.metadata.resource_version = Some(version.into());
        meta.metadata.annotations = Some(BTreeMap::from([
            (annotation::TOKEN_FINGERPRINT.to_owned(), fingerprint.to_owned()),
            (annotation::DATA_HASH.to_owned(), "sha256:d".to_owned()),
        ]));
        meta
    }

    #[test]
    fn an_echo_is_the_written_version_or_while_writing_the_written_content() {
        let known = Known::Written { fingerprint: "fp2".into(), data_hash: "sha256:d".into() };
        let writing = Remembered { resource_version: None, known: known.clone() };
        assert!(writing.is_echo(&copy_meta("7", "fp2")), "the write's own event, before the write returned");
        assert!(!writing.is_echo(&copy_meta("6", "fp1")), "an older write's event");
        let written = Remembered { resource_version: Some("7".into()), known };
        assert!(written.is_echo(&copy_meta("7", "fp2")));
        assert!(!written.is_echo(&copy_meta("8", "fp2")), "a tenant's edit keeps the annotations but not the version");
        let foreign = Remembered { resource_version: None, known: Known::Foreign };
        assert!(!foreign.is_echo(&copy_meta("7", "fp2")));
    }
}
