//! ClusterAdobeCredential: one integration, one mint per lifetime, the token in many namespaces.
//!
//! A ClusterAdobeCredential mints through an AdobeCredential it owns in the operator's
//! cluster-credential namespace, its *minter* (as a Deployment runs pods through a ReplicaSet).
//! Minting, renewal, the mint guard, refresh state and their reporting are therefore the
//! namespaced code paths, and tenants never see the source Secrets. This module keeps the minter
//! in step with the spec and copies the minter's target Secret into every selected namespace.

mod caches;
mod copies;
mod plan;
mod report;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt, stream};
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, PartialObjectMeta, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, Predicate, WatchStreamExt, predicates, watcher};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, instrument, warn};

use super::{Context, json_patch};
use crate::crd::{AdobeCredential, AdobeCredentialSpec, ClusterAdobeCredential, CreationPolicy, TargetSpec};
use crate::decision;
use crate::error::{Error, Retry};
use crate::names::condition::{DISTRIBUTED, READY};
use crate::names::{CLUSTER_CREDENTIAL_LABEL, CLUSTER_FINALIZER, FIELD_MANAGER, MANAGED_BY_LABEL, annotation};
use crate::schedule;
use crate::target::{self, StoredToken, TargetState};
use caches::{CopyMemory, Remembered, Synced, Watch};
use plan::{Copy, Known, Wanted};

/// Namespaces listed by name in status when they fail.
const MAX_LISTED_FAILURES: usize = 10;
/// Copies written at once.
const WRITE_CONCURRENCY: usize = 16;
/// Field manager of the copies: outside `adobe-credential-operator/<name>`, the managers of
/// namespaced credentials' targets, so that no tenant's credential can share it.
const COPY_MANAGER: &str = "adobe-credential-operator-cluster";

/// What the distribution shares between reconciles.
struct Distribution {
    ctx: Arc<Context>,
    /// The cluster-credential namespace: minters and source Secrets live here.
    namespace: String,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    copies: Store<PartialObjectMeta<Secret>>,
    synced: Arc<Synced>,
    known: Mutex<CopyMemory>,
}

/// The minter's valid token and the keys every copy gets.
struct Minted {
    token: StoredToken,
    data: BTreeMap<String, ByteString>,
    wanted: Wanted,
}

/// Runs the ClusterAdobeCredential controller until shutdown.
pub async fn run(ctx: Arc<Context>, namespace: String, concurrency: u16) {
    let client = ctx.client.clone();
    let synced = Arc::new(Synced::default());
    let (namespaces, namespace_writer) = reflector::store();
    let (namespaces_listed, metrics) = (synced.clone(), ctx.metrics.clone());
    let all_namespaces = Api::<PartialObjectMeta<Namespace>>::all(client.clone());
    let namespace_events = watcher(all_namespaces, watcher::Config::default())
        .default_backoff()
        .reflect(namespace_writer)
        .inspect(move |item| {
            metrics.set_cluster_watch_listed("namespaces", namespaces_listed.observe(Watch::Namespaces, item))
        })
        .touched_objects();
    let (copies, copy_writer) = reflector::store();
    let copy_config = watcher::Config::default().labels(CLUSTER_CREDENTIAL_LABEL);
    let (copies_listed, metrics) = (synced.clone(), ctx.metrics.clone());
    let copy_events = watcher(Api::<PartialObjectMeta<Secret>>::all(client.clone()), copy_config)
        .default_backoff()
        .reflect(copy_writer)
        .inspect(move |item| metrics.set_cluster_watch_listed("copies", copies_listed.observe(Watch::Copies, item)));
    let known = Mutex::default();
    let dist = Arc::new(Distribution { ctx: ctx.clone(), namespace, namespaces, copies, synced, known });

    // Status-only changes (this controller's own writes) are no news: reconciles follow the
    // spec, metadata that steers cleanup, and the namespaces and copies.
    let (credentials, credential_writer) = reflector::store();
    let spec_changes = watcher(Api::<ClusterAdobeCredential>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(credential_writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation.combine(predicates::finalizers).combine(predicates::annotations),
            Default::default(),
        );
    let controller = Controller::for_stream(spec_changes, credentials);
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
    fn known(&self) -> MutexGuard<'_, CopyMemory> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cluster credentials a change of one of their copies concerns.
    fn copy_changed(
        &self,
        event: &watcher::Event<PartialObjectMeta<Secret>>,
    ) -> Vec<ObjectRef<ClusterAdobeCredential>> {
        self.known().observe(event).iter().map(|owner| ObjectRef::new(owner)).collect()
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
    let now = Timestamp::now();
    if let Some(missing) = dist.synced.missing() {
        return wait_for_lists(cc, dist, missing, now).await;
    }
    dist.synced.reset_waits();
    let minter = match ensure_minter(cc, dist).await {
        Ok(minter) => minter,
        Err(error) => {
            let status = report::failed_status(cc, READY, &error, now);
            report::patch_status(cc, dist, status).await?;
            return Ok(Action::requeue(Duration::from_secs(300)));
        }
    };
    let minted = read_minted(&minter, dist, now).await?;
    let wanted = minted.as_ref().map(|m| &m.wanted);
    let selected = dist.selected(cc);
    let copies = dist.copies_of(cc);
    let remove_unselected = creation_policy(cc) == CreationPolicy::Owner;
    let known = dist.known_of(cc);
    let steps = plan::steps(&selected, &copies, wanted, &known, remove_unselected);
    let failures = copies::execute(cc, dist, &steps, minted.as_ref()).await?;
    let round = report::Round { minter: &minter, selected: &selected, wanted, failures: &failures, steps: &steps, now };
    report::report(cc, dist, round).await?;
    Ok(Action::requeue(Duration::from_secs(3600)))
}

/// A round before both lists are complete: nothing is written, and the retries back off. A list
/// that fails (the operator may not list namespaces, say) is said in status; one that is merely
/// under way, as after every start, is not.
async fn wait_for_lists(
    cc: &ClusterAdobeCredential,
    dist: &Distribution,
    (watch, error): (Watch, Option<String>),
    now: Timestamp,
) -> Result<Action, Error> {
    let delay = schedule::failure_backoff(dist.synced.waited(), Retry::Transient, None, rand::random());
    if let Some(detail) = error {
        let retry_in = delay.as_secs().max(1);
        let error = Error::WatchNotListed { watch: watch.as_str(), detail, retry_in };
        report::patch_status(cc, dist, report::failed_status(cc, DISTRIBUTED, &error, now)).await?;
    }
    Ok(Action::requeue(delay))
}

fn creation_policy(cc: &ClusterAdobeCredential) -> CreationPolicy {
    cc.spec.credential.target.as_ref().map(|t| t.creation_policy).unwrap_or_default()
}

/// The AdobeCredential that mints for `cc`, created or brought in step with its spec. A minter
/// edited by hand is replaced whole (with a resourceVersion precondition): an apply would leave
/// the fields a person added.
async fn ensure_minter(cc: &ClusterAdobeCredential, dist: &Distribution) -> Result<AdobeCredential, Error> {
    let api: Api<AdobeCredential> = Api::namespaced(dist.ctx.client.clone(), &dist.namespace);
    let name = Distribution::minter_name(cc);
    let spec = minter_spec(cc);
    let existing = api.get_opt(&name).await.map_err(Error::kube("reading the minting AdobeCredential"))?;
    let written = match existing {
        Some(minter) if !minter.owner_references().iter().any(|o| Some(&o.uid) == cc.uid().as_ref()) => {
            return Err(Error::MinterConflict { namespace: dist.namespace.clone(), name });
        }
        Some(minter) if minter.spec == spec => return Ok(minter),
        Some(minter) => {
            dist.ctx.leadership.check()?;
            info!(minter = %name, "putting the minter back to what its ClusterAdobeCredential says");
            let operations = json!([
                { "op": "test", "path": "/metadata/resourceVersion", "value": minter.resource_version() },
                { "op": "add", "path": "/spec", "value": spec },
            ]);
            let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
            match json_patch(operations) {
                Ok(patch) => api.patch(&name, &params, &patch).await,
                Err(err) => Err(err),
            }
        }
        None => {
            dist.ctx.leadership.check()?;
            let mut minter = AdobeCredential::new(&name, spec);
            minter.metadata.namespace = Some(dist.namespace.clone());
            minter.metadata.labels = Some(BTreeMap::from([(MANAGED_BY_LABEL.to_owned(), FIELD_MANAGER.to_owned())]));
            minter.metadata.owner_references = cc.controller_owner_ref(&()).map(|o| vec![o]);
            api.create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &minter).await
        }
    };
    written.map_err(Error::kube("writing the minting AdobeCredential"))
}

/// The minter's spec: the cluster credential's own (flow, renewal, key layout), with a target of
/// its own in the cluster-credential namespace (restarts happen per namespace, not there).
fn minter_spec(cc: &ClusterAdobeCredential) -> AdobeCredentialSpec {
    let spec = &cc.spec.credential;
    let layout = spec.target.clone().unwrap_or_default();
    AdobeCredentialSpec {
        target: Some(TargetSpec {
            name: Some(format!("{}-token", Distribution::minter_name(cc))),
            creation_policy: CreationPolicy::Owner,
            ..layout
        }),
        rollout_restart_targets: Vec::new(),
        ..spec.clone()
    }
}

/// The minter's token and the keys of its target Secret, when they hold a valid token.
async fn read_minted(minter: &AdobeCredential, dist: &Distribution, now: Timestamp) -> Result<Option<Minted>, Error> {
    let secrets: Api<Secret> = Api::namespaced(dist.ctx.client.clone(), &dist.namespace);
    let existing = secrets.get_opt(&minter.target_name()).await.map_err(Error::kube("reading the minted token"))?;
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
        self.known()
            .written
            .iter()
            .filter(|((c, _), _)| *c == name)
            .map(|((_, ns), r)| (ns.clone(), r.known.clone()))
            .collect()
    }

    fn remember(&self, cc: &ClusterAdobeCredential, namespace: &str, remembered: Option<Remembered>) {
        let key = (cc.name_any(), namespace.to_owned());
        match remembered {
            Some(r) => self.known().written.insert(key, r),
            None => self.known().written.remove(&key),
        };
    }
}

/// Deletion: copies removed by policy, the minter deleted, nothing remembered.
async fn clean_up(cc: &ClusterAdobeCredential, dist: &Distribution) -> Result<Action, Error> {
    if dist.synced.missing().is_some() {
        return Err(Error::CachesNotSynced);
    }
    dist.ctx.leadership.check()?;
    if creation_policy(cc) == CreationPolicy::Owner {
        let ours: Vec<String> = dist.copies_of(cc).into_iter().filter(|c| c.ours).map(|c| c.namespace).collect();
        let removals = stream::iter(ours).map(|ns| async move { copies::remove_copy(cc, dist, &ns).await });
        removals.buffer_unordered(WRITE_CONCURRENCY).try_collect::<Vec<_>>().await?;
    }
    let minters: Api<AdobeCredential> = Api::namespaced(dist.ctx.client.clone(), &dist.namespace);
    match minters.delete(&Distribution::minter_name(cc), &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(err) => return Err(Error::kube("deleting the minting AdobeCredential")(err)),
    }
    let name = cc.name_any();
    dist.known().written.retain(|(c, _), _| *c != name);
    dist.ctx.metrics.forget_cluster(&name);
    Ok(Action::await_change())
}
