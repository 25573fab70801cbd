//! Client secret rotation through Adobe's I/O Management API, a capability of the flows whose
//! client secret Adobe manages (`flows::FlowSpec::client_secret_rotation`):
//! - [`plan`]: what to do next (pure, from the persisted step and `now`);
//! - [`procedure`]: the steps, against a [`world::World`] (Adobe, the namespace, memory, clock);
//! - [`report`]: what to report (pure);
//! - [`management`]: the I/O Management API calls; [`state_secret`]: the operator-owned Secret
//!   that carries a rotation across restarts; [`memory`]: what this process remembers.
//!
//! The reconciler runs it against the cluster (`controller::rotate`).

pub mod management;
pub mod memory;
pub mod persisted;
pub mod plan;
pub mod procedure;
pub mod report;
pub mod settings;
pub mod state_secret;
pub mod world;

pub use memory::Memory;

use kube::ResourceExt;

use crate::crd::AdobeCredential;
use crate::names::annotation;
use crate::secret_value::sha256_hex;

/// Longest trigger annotation value looked at; anything longer is hashed from its first bytes.
const MAX_TRIGGER_BYTES: usize = 1024;

/// SHA-256 of the on-demand trigger annotation's value, if set: the value is tenant text, so
/// only its hash is kept and compared.
pub fn trigger_hash(cred: &AdobeCredential) -> Option<String> {
    let value = cred.annotations().get(annotation::ROTATE_CLIENT_SECRET)?.trim();
    if value.is_empty() {
        return None;
    }
    let cut = value.char_indices().nth(MAX_TRIGGER_BYTES).map_or(value, |(at, _)| &value[..at]);
    Some(sha256_hex(cut))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trigger_is_a_hash_of_a_bounded_value() {
        let mut cred = AdobeCredential::new("c", Default::default());
        assert_eq!(trigger_hash(&cred), None);
        cred.annotations_mut().insert(annotation::ROTATE_CLIENT_SECRET.into(), " ".into());
        assert_eq!(trigger_hash(&cred), None, "blank is no request");
        cred.annotations_mut().insert(annotation::ROTATE_CLIENT_SECRET.into(), "2026-01-01".into());
        let first = trigger_hash(&cred).expect("set");
        assert_eq!(first.len(), 64);
        assert!(!first.contains("2026"));
        cred.annotations_mut().insert(annotation::ROTATE_CLIENT_SECRET.into(), "x".repeat(1_000_000));
        assert!(trigger_hash(&cred).is_some());
    }
}
