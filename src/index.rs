//! Which AdobeCredentials a Secret matters to (as a source or as the target), kept up to date
//! from the credential watch stream, so a Secret event maps to credentials without a list call.

use std::collections::{HashMap, HashSet};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::crd::AdobeCredential;
use crate::flows::source_secret_names;
use crate::scope::Scope;

/// `(namespace, name)` of an object.
type Key = (String, String);

#[derive(Debug, Default)]
pub struct SecretIndex {
    /// Secret → names of the credentials in its namespace that read or write it.
    by_secret: HashMap<Key, HashSet<String>>,
    /// Credential → the Secrets it was indexed under, to undo on change or deletion.
    by_credential: HashMap<Key, Vec<String>>,
}

impl SecretIndex {
    /// Records (or updates) which Secrets `cred` references.
    pub fn upsert(&mut self, cred: &AdobeCredential) {
        let namespace = cred.namespace().unwrap_or_default();
        let name = cred.name_any();
        self.remove(&namespace, &name);
        let mut secrets = source_secret_names(cred);
        secrets.push(cred.target_name());
        secrets.sort();
        secrets.dedup();
        for secret in &secrets {
            self.by_secret.entry((namespace.clone(), secret.clone())).or_default().insert(name.clone());
        }
        self.by_credential.insert((namespace, name), secrets);
    }

    pub fn remove(&mut self, namespace: &str, name: &str) {
        let Some(secrets) = self.by_credential.remove(&(namespace.to_owned(), name.to_owned())) else { return };
        for secret in secrets {
            let key = (namespace.to_owned(), secret);
            if let Some(names) = self.by_secret.get_mut(&key) {
                names.remove(name);
                if names.is_empty() {
                    self.by_secret.remove(&key);
                }
            }
        }
    }

    /// Drops every credential within `scope` not in `keep` (after a relist, deletions that
    /// happened while the watch was down arrive as absences, not as events).
    pub fn retain_in(&mut self, scope: &Scope, keep: &HashSet<Key>) {
        let stale: Vec<Key> =
            self.by_credential.keys().filter(|k| scope.contains(&k.0) && !keep.contains(*k)).cloned().collect();
        for (ns, name) in stale {
            self.remove(&ns, &name);
        }
    }

    /// Credentials that reference the Secret `namespace/name`.
    pub fn credentials_for(&self, namespace: &str, name: &str) -> Vec<ObjectRef<AdobeCredential>> {
        self.by_secret
            .get(&(namespace.to_owned(), name.to_owned()))
            .into_iter()
            .flatten()
            .map(|cred| ObjectRef::new(cred).within(namespace))
            .collect()
    }

    pub fn contains(&self, namespace: &str, name: &str) -> bool {
        self.by_credential.contains_key(&(namespace.to_owned(), name.to_owned()))
    }

    pub fn len(&self) -> usize {
        self.by_credential.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_credential.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{AdobeCredentialSpec, ClientSecretRef, OAuthServerToServer};

    fn cred(ns: &str, name: &str, source: &str) -> AdobeCredential {
        let mut c = AdobeCredential::new(
            name,
            AdobeCredentialSpec {
                oauth_server_to_server: Some(OAuthServerToServer {
                    client_secret_ref: ClientSecretRef {
                        name: source.into(),
                        client_id_key: "client_id".into(),
                        client_secret_key: "client_secret".into(),
                        secondary_client_secret_key: None,
                    },
                    scopes: vec!["openid".into()],
                    ims_endpoint: "https://ims-na1.adobelogin.com".into(),
                    org_id: None,
                    client_secret_rotation: None,
                }),
                ..Default::default()
            },
        );
        c.metadata.namespace = Some(ns.into());
        c
    }

    fn names(refs: Vec<ObjectRef<AdobeCredential>>) -> Vec<String> {
        let mut n: Vec<_> = refs.into_iter().map(|r| r.name).collect();
        n.sort();
        n
    }

    #[test]
    fn maps_sources_and_targets_per_namespace() {
        let mut index = SecretIndex::default();
        index.upsert(&cred("a", "one", "shared"));
        index.upsert(&cred("a", "two", "shared"));
        index.upsert(&cred("b", "three", "shared"));
        assert_eq!(names(index.credentials_for("a", "shared")), ["one", "two"]);
        assert_eq!(names(index.credentials_for("a", "one-token")), ["one"]);
        assert_eq!(names(index.credentials_for("b", "shared")), ["three"]);
        assert!(index.credentials_for("c", "shared").is_empty());
    }

    #[test]
    fn updates_and_removals_undo_old_entries() {
        let mut index = SecretIndex::default();
        index.upsert(&cred("a", "one", "old"));
        index.upsert(&cred("a", "one", "new"));
        assert!(index.credentials_for("a", "old").is_empty());
        assert_eq!(names(index.credentials_for("a", "new")), ["one"]);
        index.remove("a", "one");
        assert!(index.is_empty());
        assert!(index.credentials_for("a", "new").is_empty());
    }

    #[test]
    fn relist_drops_credentials_deleted_meanwhile() {
        let mut index = SecretIndex::default();
        index.upsert(&cred("a", "kept", "s1"));
        index.upsert(&cred("a", "gone", "s2"));
        index.upsert(&cred("b", "other-ns", "s3"));
        let keep = HashSet::from([("a".to_string(), "kept".to_string())]);
        index.retain_in(&Scope::Namespace("a".into()), &keep);
        assert_eq!(index.len(), 2);
        assert!(index.credentials_for("a", "s2").is_empty());
        assert_eq!(names(index.credentials_for("b", "s3")), ["other-ns"]);
    }
}
