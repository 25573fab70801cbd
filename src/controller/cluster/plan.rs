//! What a ClusterAdobeCredential's distribution does, as pure functions of what is known: which
//! namespaces are selected, what each namespace's copy of the token holds, and what this replica
//! remembers having written.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};
use sha2::{Digest, Sha256};

use crate::secret_value::hex;

/// The token and keys every selected namespace should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub fingerprint: String,
    pub data_hash: String,
}

/// A namespace's copy of the token, as its metadata tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub namespace: String,
    /// The copy names this ClusterAdobeCredential (another one may use the same target name).
    pub ours: bool,
    pub fingerprint: Option<String>,
    pub data_hash: Option<String>,
}

/// What this replica knows about a namespace's copy since it last listed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    /// It wrote this, and has seen no other write since.
    Written { fingerprint: String, data_hash: String },
    /// Someone else wrote or deleted the copy after it was written: write it again.
    Foreign,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create the copy (the namespace has none of ours).
    Create(String),
    /// Rewrite our copy.
    Update(String),
    /// Remove our copy from a namespace that is no longer selected.
    Remove(String),
}

/// Whether a namespace with these labels is selected: named in the list, or matched by the
/// selector (`{}` matches every namespace; no selector matches none). A selector the API server
/// admitted but that cannot be parsed selects nothing.
pub fn selects(
    selector: Option<&LabelSelector>,
    names: &[String],
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    if names.iter().any(|n| n == namespace) {
        return true;
    }
    let Some(selector) = selector else { return false };
    Selector::try_from(selector.clone()).is_ok_and(|s| s.matches(labels))
}

/// The writes that bring every selected namespace to `wanted` and, when `remove_unselected`,
/// take our copies out of the others. With no token to distribute, copies are left as they are.
pub fn steps(
    selected: &BTreeSet<String>,
    copies: &[Copy],
    wanted: Option<&Wanted>,
    known: &HashMap<String, Known>,
    remove_unselected: bool,
) -> Vec<Step> {
    let by_namespace: HashMap<&str, &Copy> = copies.iter().map(|c| (c.namespace.as_str(), c)).collect();
    let mut steps = Vec::new();
    if let Some(wanted) = wanted {
        for namespace in selected {
            let copy = by_namespace.get(namespace.as_str()).copied();
            if !is_current(copy, known.get(namespace), wanted) {
                let ours = copy.is_some_and(|c| c.ours);
                steps.push(if ours { Step::Update(namespace.clone()) } else { Step::Create(namespace.clone()) });
            }
        }
    }
    if remove_unselected {
        let gone = copies.iter().filter(|c| c.ours && !selected.contains(&c.namespace));
        steps.extend(gone.map(|c| Step::Remove(c.namespace.clone())));
    }
    steps
}

/// Whether a namespace holds the wanted token. What this replica wrote counts even before the
/// watch shows it (the copy list may lag behind its own writes); after a restart, the copy's
/// annotations are trusted.
fn is_current(copy: Option<&Copy>, known: Option<&Known>, wanted: &Wanted) -> bool {
    match known {
        Some(Known::Written { fingerprint, data_hash }) => {
            *fingerprint == wanted.fingerprint && *data_hash == wanted.data_hash
        }
        Some(Known::Foreign) => false,
        None => copy.is_some_and(|c| {
            c.ours
                && c.fingerprint.as_deref() == Some(&wanted.fingerprint)
                && c.data_hash.as_deref() == Some(&wanted.data_hash)
        }),
    }
}

/// SHA-256 over the keys and values of a Secret's data, in key order.
pub fn data_hash(data: &BTreeMap<String, ByteString>) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in data {
        for part in [key.as_bytes(), value.0.as_slice()] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
    }
    format!("sha256:{}", hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn wanted(fingerprint: &str) -> Wanted {
        Wanted { fingerprint: fingerprint.into(), data_hash: "sha256:d".into() }
    }

    fn copy(namespace: &str, fingerprint: &str) -> Copy {
        Copy {
            namespace: namespace.into(),
            ours: true,
            fingerprint: Some(fingerprint.into()),
            data_hash: Some("sha256:d".into()),
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn selection_by_name_by_labels_and_by_expressions() {
        let team = LabelSelector {
            match_labels: Some([("adobe".to_string(), "firefly".to_string())].into()),
            ..Default::default()
        };
        let firefly = labels(&[("adobe", "firefly")]);
        assert!(selects(Some(&team), &[], "a", &firefly));
        assert!(!selects(Some(&team), &[], "b", &labels(&[("adobe", "other")])));
        assert!(selects(None, &["b".into()], "b", &BTreeMap::new()), "named");
        assert!(!selects(None, &[], "c", &firefly), "no selector selects nothing");
        assert!(selects(Some(&LabelSelector::default()), &[], "d", &BTreeMap::new()), "{{}} selects all");
        let not_in = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["system".into()]),
            }]),
            ..Default::default()
        };
        assert!(selects(Some(&not_in), &[], "e", &BTreeMap::new()));
        assert!(!selects(Some(&not_in), &[], "f", &labels(&[("tier", "system")])));
        let broken = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "Sometimes".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert!(!selects(Some(&broken), &[], "g", &BTreeMap::new()), "an unparsable selector selects nothing");
    }

    #[test]
    fn new_namespaces_get_a_copy_current_ones_nothing() {
        let steps = steps(&set(&["a", "b"]), &[copy("a", "fp1")], Some(&wanted("fp1")), &HashMap::new(), true);
        assert_eq!(steps, [Step::Create("b".into())]);
    }

    #[test]
    fn a_new_token_rewrites_every_copy() {
        let copies = [copy("a", "fp1"), copy("b", "fp1")];
        let steps = steps(&set(&["a", "b"]), &copies, Some(&wanted("fp2")), &HashMap::new(), true);
        assert_eq!(steps, [Step::Update("a".into()), Step::Update("b".into())]);
    }

    #[test]
    fn own_writes_count_before_the_watch_shows_them() {
        let known = HashMap::from([
            ("a".to_string(), Known::Written { fingerprint: "fp2".into(), data_hash: "sha256:d".into() }),
            ("b".to_string(), Known::Written { fingerprint: "fp2".into(), data_hash: "sha256:d".into() }),
        ]);
        // The copy list still shows the old token in a and no copy in b.
        let steps = steps(&set(&["a", "b"]), &[copy("a", "fp1")], Some(&wanted("fp2")), &known, true);
        assert!(steps.is_empty(), "{steps:?}");
    }

    #[test]
    fn a_foreign_write_or_delete_is_repaired() {
        let known = HashMap::from([("a".to_string(), Known::Foreign), ("b".to_string(), Known::Foreign)]);
        let steps = steps(&set(&["a", "b"]), &[copy("a", "fp1")], Some(&wanted("fp1")), &known, true);
        assert_eq!(steps, [Step::Update("a".into()), Step::Create("b".into())]);
    }

    #[test]
    fn unselected_copies_are_removed_only_by_policy_and_never_someone_elses() {
        let mut theirs = copy("c", "fp1");
        theirs.ours = false;
        let copies = [copy("a", "fp1"), copy("b", "fp1"), theirs];
        let removed = steps(&set(&["a"]), &copies, Some(&wanted("fp1")), &HashMap::new(), true);
        assert_eq!(removed, [Step::Remove("b".into())]);
        assert!(steps(&set(&["a"]), &copies, Some(&wanted("fp1")), &HashMap::new(), false).is_empty());
    }

    #[test]
    fn a_copy_of_another_cluster_credential_is_created_over_which_fails_as_a_conflict() {
        let mut theirs = copy("a", "fp1");
        theirs.ours = false;
        let steps = steps(&set(&["a"]), &[theirs], Some(&wanted("fp1")), &HashMap::new(), true);
        assert_eq!(steps, [Step::Create("a".into())], "a create of an existing Secret is refused by the API server");
    }

    #[test]
    fn without_a_token_nothing_is_written() {
        assert!(steps(&set(&["a"]), &[], None, &HashMap::new(), true).is_empty());
    }

    #[test]
    fn data_hash_tells_key_and_value_boundaries_apart() {
        let one = BTreeMap::from([("ab".to_string(), ByteString(b"c".to_vec()))]);
        let two = BTreeMap::from([("a".to_string(), ByteString(b"bc".to_vec()))]);
        assert_ne!(data_hash(&one), data_hash(&two));
        assert_eq!(data_hash(&one), data_hash(&one.clone()));
    }
}
