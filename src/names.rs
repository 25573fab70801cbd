//! Every name the operator writes into the cluster: its field manager, labels, annotation keys,
//! condition types and reasons. Users match on these (alerts, `kubectl wait`, scripts), so each
//! lives here once and changing one is an API change.

/// The field manager of the operator's own writes (status, refresh state, restarts); target
/// Secrets are written by one manager per credential (`target::field_manager`).
pub const FIELD_MANAGER: &str = "adobe-credential-operator";
/// The field manager of `login --apply`, which writes a user's refresh token into their Secret.
pub const LOGIN_FIELD_MANAGER: &str = "adobe-credential-operator-login";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Label of the copies a ClusterAdobeCredential writes; its value is the resource's name (cut
/// to fit a label value; the annotation of the same key holds the whole name).
pub const CLUSTER_CREDENTIAL_LABEL: &str = "credentials.adobe-operator.io/cluster-credential";
/// Finalizer of a ClusterAdobeCredential: its copies are removed by policy before it goes.
pub const CLUSTER_FINALIZER: &str = "credentials.adobe-operator.io/cleanup";
/// Finalizer of an AdobeCredential whose client secret the operator rotates: a rotation in
/// progress is wound down before the credential goes.
pub const ROTATION_FINALIZER: &str = "credentials.adobe-operator.io/client-secret-rotation";

/// Annotations on the Secrets the operator writes. They let a restarted operator adopt a
/// still-valid token instead of minting again, and they never contain secret material.
pub mod annotation {
    pub const CREDENTIAL: &str = "credentials.adobe-operator.io/credential";
    pub const EXPIRES_AT: &str = "credentials.adobe-operator.io/expires-at";
    pub const ISSUED_AT: &str = "credentials.adobe-operator.io/issued-at";
    pub const SOURCE_REVISION: &str = "credentials.adobe-operator.io/source-revision";
    /// On a refresh state: the chain the token endpoint refused for good.
    pub const REFUSED_CHAIN: &str = "credentials.adobe-operator.io/refused-chain";
    pub const TOKEN_FINGERPRINT: &str = "credentials.adobe-operator.io/token-fingerprint";
    pub const CLIENT_SECRET_KEY: &str = "credentials.adobe-operator.io/client-secret-key";
    /// On a ClusterAdobeCredential's copies: the resource's name.
    pub const CLUSTER_CREDENTIAL: &str = "credentials.adobe-operator.io/cluster-credential";
    /// On a ClusterAdobeCredential's copies: the hash of their keys and values.
    pub const DATA_HASH: &str = "credentials.adobe-operator.io/data-hash";
    /// Pod-template annotation `kubectl rollout restart` sets.
    pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
    /// Pod-template annotation naming the token the pods were restarted for.
    pub const RESTARTED_FOR: &str = "credentials.adobe-operator.io/restarted-for-token";
    /// On an AdobeCredential: set to a new value to rotate its client secret now.
    pub const ROTATE_CLIENT_SECRET: &str = "credentials.adobe-operator.io/rotate-client-secret";
}

/// Condition types in `status.conditions`.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const DEPRECATED: &str = "Deprecated";
    pub const ROLLOUT_RESTART: &str = "RolloutRestart";
    /// ClusterAdobeCredential: every selected namespace holds the current token.
    pub const DISTRIBUTED: &str = "Distributed";
    pub const CLIENT_SECRET_ROTATION: &str = "ClientSecretRotation";
}

/// Reasons of conditions and Events that are not failures (failures take theirs from
/// `Error::reason`). The variant name is the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
pub enum Reason {
    /// Ready: the target holds a valid token for the current inputs.
    TokenMinted,
    /// Ready False: the last token expired and no new one could be minted.
    TokenExpired,
    /// Event: the target Secret was written back with the token it should hold, without a mint.
    TargetRestored,
    /// Event: white space or a byte order mark was removed from an input.
    InputCleaned,
    /// Event: a consumer was restarted for a new token.
    RolloutRestarted,
    /// RolloutRestart True: every consumer runs with the current token.
    RolloutCurrent,
    RolloutTargetNotFound,
    /// The operator's RBAC does not let it patch workloads (the chart's default).
    RolloutRestartForbidden,
    RolloutRestartFailed,
    /// Deprecated True: the flow is retired by its vendor.
    ServiceAccountJWTDeprecated,
    /// ClusterAdobeCredential, Ready False: its minter has not provided a token yet.
    TokenPending,
    /// Distributed True: every selected namespace holds the current token.
    AllNamespacesWritten,
    /// Event: a new token was written to namespaces.
    TokenDistributed,
    /// ClientSecretRotation True: no rotation in progress (the message says when the next is).
    RotationIdle,
    /// ClientSecretRotation True: a rotation is under way (the message names the step).
    RotationInProgress,
    /// Event: a rotation started.
    RotationStarted,
    /// Event: a leftover secret of an interrupted add (its value never seen) was deleted.
    OrphanedSecretDeleted,
    /// Event: the other, foreign secret was deleted because `deleteOtherSecret` allows it.
    OtherSecretDeleted,
    /// Event: a new client secret was added (and persisted).
    ClientSecretAdded,
    /// Event: IMS accepted the new secret; it was written to the source Secret.
    SourceSecretUpdated,
    /// Event: a token minted with the new secret is in the target.
    ClientSecretSwitched,
    /// Event: the previous secret was deleted; the rotation is complete.
    RotationCompleted,
    /// Event: the new secret that never worked was deleted.
    NewSecretDeleted,
    /// ClientSecretRotation False, Warning Event: the previous secret is still used by someone
    /// else; it is kept.
    OldSecretStillInUse,
    /// ClientSecretRotation False, Warning Event: the other secret `deleteOtherSecret` would
    /// delete was used within the grace period; the rotation waits.
    OtherSecretStillInUse,
    /// Event: the source Secret holds another client secret than the one identified before.
    ClientSecretInUseChanged,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_its_variant_name() {
        assert_eq!(Reason::TokenMinted.as_str(), "TokenMinted");
        assert_eq!(Reason::ServiceAccountJWTDeprecated.as_str(), "ServiceAccountJWTDeprecated");
    }
}
