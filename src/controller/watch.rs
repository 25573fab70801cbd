//! Wiring: the credential watch that feeds the Secret index and readiness, the metadata-only
//! Secret watch that triggers reconciles, one controller per watch scope, and shutdown.

use std::collections::HashSet;
use std::sync::Arc;

use futures::{FutureExt, Stream, StreamExt, TryStreamExt, future, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::api::PartialObjectMeta;
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tracing::{debug, error, warn};

use super::{Context, error_policy, reconcile};
use crate::crd::AdobeCredential;
use crate::scope::{Namespaces, Scope};

/// Runs the controller until the process is asked to stop; in-flight reconciles finish first,
/// within the shutdown timeout.
pub async fn run(ctx: Arc<Context>, namespaces: Namespaces, concurrency: u16) {
    let scopes = namespaces.scopes();
    ctx.health.start_leading(scopes.len());
    let mut controllers: Vec<_> =
        scopes.into_iter().map(|scope| controller(ctx.clone(), scope, concurrency).boxed()).collect();
    if let Some(namespace) = ctx.cluster_namespace.clone() {
        controllers.push(super::cluster::run(ctx.clone(), namespace, concurrency).boxed());
    }
    let mut all = std::pin::pin!(future::join_all(controllers));
    let mut stop = ctx.shutdown.clone();
    tokio::select! {
        _ = &mut all => return,
        _ = stop.wait_for(|stop| *stop) => {}
    }
    if tokio::time::timeout(ctx.shutdown_timeout, all).await.is_err() {
        let mut stuck: Vec<String> = ctx.in_flight_names().into_iter().collect();
        stuck.sort();
        error!(timeout = ?ctx.shutdown_timeout, ?stuck, "reconciles still running at the shutdown deadline; stopping without them");
    }
}

async fn controller(ctx: Arc<Context>, scope: Scope, concurrency: u16) {
    let credentials: Api<AdobeCredential> = scope.api(ctx.client.clone());
    let secrets: Api<PartialObjectMeta<Secret>> = scope.api(ctx.client.clone());
    let (reader, writer) = reflector::store();
    let mut updater = IndexUpdater { ctx: ctx.clone(), scope, relisted: HashSet::new(), synced: false };
    let credential_stream = watcher(credentials, watcher::Config::default())
        .default_backoff()
        // managedFields are never read here and are a large share of each cached object.
        .modify(|cred| cred.managed_fields_mut().clear())
        .inspect_ok(move |event| updater.observe(event))
        .reflect(writer)
        .applied_objects();

    let mut shutdown = ctx.shutdown.clone();
    Controller::for_stream(credential_stream, reader)
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .reconcile_on(secret_triggers(secrets, ctx.clone()))
        .graceful_shutdown_on(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, action)) => debug!(credential = %obj, ?action, "reconciled"),
                Err(err) => warn!(error = %err, "controller error"),
            }
        })
        .await;
}

/// Credentials to reconcile because a Secret they reference changed. Metadata only: the operator
/// never holds the data of Secrets it does not need.
fn secret_triggers(
    secrets: Api<PartialObjectMeta<Secret>>,
    ctx: Arc<Context>,
) -> impl Stream<Item = ObjectRef<AdobeCredential>> {
    watcher(secrets, watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .filter_map(|result| async move { result.map_err(|err| warn!(error = %err, "Secret watch error")).ok() })
        .flat_map(move |meta| stream::iter(ctx.credentials_touched_by(&meta)))
}

impl Context {
    /// Credentials that a change of the Secret `meta` concerns; marks them for a full reconcile.
    fn credentials_touched_by(&self, meta: &PartialObjectMeta<Secret>) -> Vec<ObjectRef<AdobeCredential>> {
        let candidates = self.index().credentials_for(&meta.namespace().unwrap_or_default(), &meta.name_any());
        self.states.secret_changed(candidates, meta.resource_version().as_deref())
    }

    fn in_flight_names(&self) -> HashSet<String> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Keeps the Secret index, the per-credential state and metrics in step with one credential
/// watch: deletions and relists drop what belongs to credentials that are gone.
struct IndexUpdater {
    ctx: Arc<Context>,
    scope: Scope,
    relisted: HashSet<(String, String)>,
    /// The first complete list has been seen (readiness).
    synced: bool,
}

impl IndexUpdater {
    fn observe(&mut self, event: &watcher::Event<AdobeCredential>) {
        let key = |c: &AdobeCredential| (c.namespace().unwrap_or_default(), c.name_any());
        match event {
            watcher::Event::Apply(cred) => self.ctx.index().upsert(cred),
            watcher::Event::Delete(cred) => {
                let (namespace, name) = key(cred);
                self.ctx.index().remove(&namespace, &name);
                self.ctx.forget(&ObjectRef::from_obj(cred));
            }
            watcher::Event::Init => self.relisted.clear(),
            watcher::Event::InitApply(cred) => {
                self.relisted.insert(key(cred));
                self.ctx.index().upsert(cred);
            }
            watcher::Event::InitDone => self.relist_done(),
        }
    }

    fn relist_done(&mut self) {
        if !self.synced {
            // Seen here rather than through Store::wait_until_ready, which wakes only one of
            // several waiters and the Controller already waits on it.
            self.synced = true;
            debug!(scope = ?self.scope, "AdobeCredential cache synced");
            self.ctx.health.watch_synced();
        }
        let keep = std::mem::take(&mut self.relisted);
        let scope = &self.scope;
        self.ctx.index().retain_in(scope, &keep);
        let kept = |ns: &str, name: &str| !scope.contains(ns) || keep.contains(&(ns.to_owned(), name.to_owned()));
        self.ctx.states.retain(|k| kept(k.namespace.as_deref().unwrap_or_default(), &k.name));
        self.ctx.metrics.retain(kept);
    }
}

/// Marks a credential as being reconciled until dropped.
pub(super) struct InFlight<'a> {
    ctx: &'a Context,
    name: String,
}

impl<'a> InFlight<'a> {
    pub(super) fn enter(ctx: &'a Context, name: String) -> Self {
        ctx.in_flight.lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone());
        Self { ctx, name }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.ctx.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.name);
    }
}
