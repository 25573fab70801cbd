//! Per-test namespaces: tests share one control plane and are isolated by unique names.

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use rand::Rng;

use crate::ControlPlane;

/// DNS labels are at most 63 characters.
const MAX_NAME_LEN: usize = 63;
const SUFFIX_LEN: usize = 6;
const SUFFIX_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A namespace created for one test. It is left behind afterwards: without a controller-manager
/// a deleted namespace would stay `Terminating` anyway, and the names never repeat.
#[derive(Debug, Clone)]
pub struct TestNamespace {
    name: String,
}

impl TestNamespace {
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl ControlPlane {
    /// Creates a namespace named `<prefix>-<random suffix>`; `prefix` must be a lowercase DNS
    /// label prefix such as `"renewal"`.
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace> {
        let name = unique_name(prefix)?;
        let namespace = Namespace {
            metadata: ObjectMeta { name: Some(name.clone()), ..ObjectMeta::default() },
            ..Namespace::default()
        };
        Api::<Namespace>::all(self.client())
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(TestNamespace { name })
    }
}

fn unique_name(prefix: &str) -> Result<String> {
    ensure!(
        !prefix.is_empty()
            && prefix.len() < MAX_NAME_LEN - SUFFIX_LEN
            && prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
        "namespace prefix {prefix:?} is not a short lowercase DNS label"
    );
    let mut rng = rand::rng();
    let suffix: String =
        (0..SUFFIX_LEN).map(|_| char::from(SUFFIX_ALPHABET[rng.random_range(0..SUFFIX_ALPHABET.len())])).collect();
    Ok(format!("{prefix}-{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_dns_labels() {
        let a = unique_name("renewal").expect("valid prefix");
        let b = unique_name("renewal").expect("valid prefix");
        assert_ne!(a, b);
        assert!(a.starts_with("renewal-") && a.len() == "renewal-".len() + SUFFIX_LEN);
        assert!(a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    }

    #[test]
    fn rejects_invalid_prefixes() {
        for prefix in ["", "Upper", "under_score", "-dash", &"x".repeat(60)] {
            assert!(unique_name(prefix).is_err(), "{prefix:?} accepted");
        }
    }
}
