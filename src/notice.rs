//! A Kubernetes Event to publish about a credential, decided by pure code (the reconciler's
//! reporting, the rotation's report) and published by the controller.

use kube::runtime::events::EventType;

use crate::names::Reason;

/// An Event to publish about the credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub type_: EventType,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

impl Notice {
    pub fn normal(reason: Reason, action: &'static str, note: String) -> Self {
        Self { type_: EventType::Normal, reason: reason.as_str(), action, note }
    }

    pub fn warning(reason: &'static str, action: &'static str, note: String) -> Self {
        Self { type_: EventType::Warning, reason, action, note }
    }
}
