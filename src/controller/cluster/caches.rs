//! What the distribution knows from its watches: whether the namespace and copy lists are
//! complete (and why not yet), and what this replica remembers of the copies it wrote, kept true
//! by every event and every relist of the copies' watch. Pure: unit-tested without an API server.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::PartialObjectMeta;
use kube::runtime::watcher;
use tracing::debug;

use super::plan::Known;
use crate::error::{MAX_MESSAGE, kube_summary, one_line};
use crate::names::annotation;

/// The two watches a distribution needs complete lists of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Watch {
    Namespaces,
    Copies,
}

impl Watch {
    pub fn as_str(self) -> &'static str {
        match self {
            Watch::Namespaces => "namespaces",
            Watch::Copies => "copies",
        }
    }
}

/// Whether the namespace and copy caches hold a complete list. Until both do, a distribution
/// would take every namespace for unselected and every copy for missing.
#[derive(Default)]
pub(super) struct Synced {
    namespaces: WatchState,
    copies: WatchState,
    /// Distribution rounds in a row that found a list missing: their retries back off.
    waits: AtomicU32,
}

#[derive(Default)]
struct WatchState {
    listed: AtomicBool,
    /// Why the list has not completed yet, as one bounded line.
    last_error: Mutex<Option<String>>,
}

impl Synced {
    fn state(&self, watch: Watch) -> &WatchState {
        match watch {
            Watch::Namespaces => &self.namespaces,
            Watch::Copies => &self.copies,
        }
    }

    /// Takes in one item of `watch`'s stream; returns whether its list is complete.
    pub fn observe<K>(&self, watch: Watch, item: &Result<watcher::Event<K>, watcher::Error>) -> bool {
        let state = self.state(watch);
        match item {
            Ok(watcher::Event::InitDone) => {
                state.listed.store(true, Ordering::Release);
                *state.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
            Err(err) => {
                let line = match err {
                    watcher::Error::InitialListFailed(e)
                    | watcher::Error::WatchStartFailed(e)
                    | watcher::Error::WatchFailed(e) => kube_summary(e),
                    other => one_line(&other.to_string(), MAX_MESSAGE),
                };
                *state.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(line);
            }
            Ok(_) => {}
        }
        state.listed.load(Ordering::Acquire)
    }

    /// The first watch without a complete list, and its last error; None once both have one.
    pub fn missing(&self) -> Option<(Watch, Option<String>)> {
        let missing =
            [Watch::Namespaces, Watch::Copies].into_iter().find(|w| !self.state(*w).listed.load(Ordering::Acquire))?;
        let error = self.state(missing).last_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Some((missing, error))
    }

    /// Counts one more round that found a list missing; returns how many in a row.
    pub fn waited(&self) -> u32 {
        self.waits.fetch_add(1, Ordering::AcqRel).saturating_add(1)
    }

    /// Both lists are complete: the next wait starts the backoff afresh.
    pub fn reset_waits(&self) {
        self.waits.store(0, Ordering::Release);
    }
}

#[derive(Debug, Clone)]
pub(super) struct Remembered {
    /// The version this replica's write produced; None while the write is under way.
    pub resource_version: Option<String>,
    pub known: Known,
}

/// What this replica remembers of the copies it wrote, kept true by the copies' watch.
#[derive(Debug, Default)]
pub(super) struct CopyMemory {
    /// `(cluster credential, namespace)` → what this replica wrote there and its resourceVersion.
    pub written: HashMap<(String, String), Remembered>,
    /// The copies of a list under way (the watch's first one, or a relist).
    listed: HashSet<(String, String)>,
}

impl CopyMemory {
    /// Takes in one event of the copies' watch; returns the cluster credentials it concerns. The
    /// echo of this replica's own write is no news; any other write or a deletion makes the copy
    /// foreign, to be written again. A relist (after the watch lost track) is checked against
    /// what is remembered: a copy listed at another version, or not listed at all, changed
    /// meanwhile.
    pub fn observe(&mut self, event: &watcher::Event<PartialObjectMeta<Secret>>) -> Vec<String> {
        let meta = match event {
            watcher::Event::Apply(meta) | watcher::Event::Delete(meta) | watcher::Event::InitApply(meta) => meta,
            watcher::Event::Init => {
                self.listed.clear();
                return Vec::new();
            }
            watcher::Event::InitDone => return self.forget_unlisted(),
        };
        let Some(owner) = meta.annotations().get(annotation::CLUSTER_CREDENTIAL).cloned() else { return Vec::new() };
        let key = (owner.clone(), meta.namespace().unwrap_or_default());
        let listing = matches!(event, watcher::Event::InitApply(_));
        if listing {
            self.listed.insert(key.clone());
        }
        let deleted = matches!(event, watcher::Event::Delete(_));
        if let Some(remembered) = self.written.get_mut(&key).filter(|r| !deleted && r.is_echo(meta)) {
            // The event of a write under way may come before the write returns: learn its version.
            remembered.resource_version = meta.resource_version();
            return if listing { vec![owner] } else { Vec::new() };
        }
        if !listing || self.written.contains_key(&key) {
            debug!(namespace = %key.1, version = ?meta.resource_version(), "a copy was changed by someone else");
            self.written.insert(key, Remembered { resource_version: None, known: Known::Foreign });
        }
        vec![owner]
    }

    /// After a list: what this replica wrote and the list did not show was deleted meanwhile.
    fn forget_unlisted(&mut self) -> Vec<String> {
        let listed = std::mem::take(&mut self.listed);
        let mut concerned = Vec::new();
        for (key, remembered) in self.written.iter_mut().filter(|(key, _)| !listed.contains(*key)) {
            debug!(namespace = %key.1, "a copy this replica wrote was not in the list");
            *remembered = Remembered { resource_version: None, known: Known::Foreign };
            concerned.push(key.0.clone());
        }
        concerned
    }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

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

    fn in_namespace(mut meta: PartialObjectMeta<Secret>, namespace: &str) -> PartialObjectMeta<Secret> {
        meta.metadata.namespace = Some(namespace.into());
        meta.annotations_mut().insert(annotation::CLUSTER_CREDENTIAL.into(), "cc".into());
        meta
    }

    #[test]
    fn a_relist_is_checked_against_the_copies_this_replica_wrote() {
        let mut memory = CopyMemory::default();
        let written = || Remembered {
            resource_version: Some("7".into()),
            known: Known::Written { fingerprint: "fp2".into(), data_hash: "sha256:d".into() },
        };
        // The first list after a start knows nothing to compare with.
        memory.observe(&watcher::Event::Init);
        assert_eq!(memory.observe(&watcher::Event::InitApply(in_namespace(copy_meta("3", "fp1"), "x"))), ["cc"]);
        assert_eq!(memory.observe(&watcher::Event::InitDone), Vec::<String>::new());
        assert!(memory.written.is_empty());

        for ns in ["same", "changed", "gone"] {
            memory.written.insert(("cc".into(), ns.into()), written());
        }
        memory.observe(&watcher::Event::Init);
        memory.observe(&watcher::Event::InitApply(in_namespace(copy_meta("7", "fp2"), "same")));
        memory.observe(&watcher::Event::InitApply(in_namespace(copy_meta("9", "fp2"), "changed")));
        assert_eq!(memory.observe(&watcher::Event::InitDone), ["cc"], "the one not listed");
        let known = |ns: &str| memory.written[&("cc".to_owned(), ns.to_owned())].known.clone();
        assert!(matches!(known("same"), Known::Written { .. }), "listed as written");
        assert_eq!(known("changed"), Known::Foreign, "listed at another version");
        assert_eq!(known("gone"), Known::Foreign, "deleted while the watch had lost track");
    }

    #[test]
    fn the_echo_of_a_write_is_no_news_another_write_is() {
        let mut memory = CopyMemory::default();
        let writing = Remembered {
            resource_version: None,
            known: Known::Written { fingerprint: "fp2".into(), data_hash: "sha256:d".into() },
        };
        memory.written.insert(("cc".into(), "a".into()), writing);
        let echo = in_namespace(copy_meta("7", "fp2"), "a");
        assert!(memory.observe(&watcher::Event::Apply(echo)).is_empty());
        assert_eq!(memory.written[&("cc".to_owned(), "a".to_owned())].resource_version.as_deref(), Some("7"));
        let edit = in_namespace(copy_meta("8", "fp2"), "a");
        assert_eq!(memory.observe(&watcher::Event::Apply(edit.clone())), ["cc"]);
        assert_eq!(memory.written[&("cc".to_owned(), "a".to_owned())].known, Known::Foreign);
        assert_eq!(memory.observe(&watcher::Event::Delete(edit)), ["cc"]);
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

    #[test]
    fn a_list_that_fails_is_missing_with_its_reason_until_it_completes() {
        use k8s_openapi::api::core::v1::Namespace;
        let synced = Synced::default();
        assert_eq!(synced.missing(), Some((Watch::Namespaces, None)), "under way, nothing to say");
        let status = kube::core::Status::failure("namespaces is forbidden", "Forbidden").with_code(403);
        let refused = watcher::Error::InitialListFailed(kube::Error::Api(Box::new(status)));
        assert!(!synced.observe::<Namespace>(Watch::Namespaces, &Err(refused)));
        let reason = Some("namespaces is forbidden (HTTP 403 Forbidden)".to_owned());
        assert_eq!(synced.missing(), Some((Watch::Namespaces, reason)));
        assert!(synced.observe::<Namespace>(Watch::Namespaces, &Ok(watcher::Event::InitDone)));
        assert_eq!(synced.missing(), Some((Watch::Copies, None)));
        assert!(synced.observe::<Secret>(Watch::Copies, &Ok(watcher::Event::InitDone)));
        assert_eq!(synced.missing(), None);
        assert_eq!((synced.waited(), synced.waited()), (1, 2), "waits in a row back off");
        synced.reset_waits();
        assert_eq!(synced.waited(), 1);
    }
}
