//! The `AdobeCredential` custom resource (`credentials.adobe-operator.io/v1alpha1`).
//!
//! The schema carries the validation the API server enforces (CEL rules and patterns), so a bad
//! object is rejected at `kubectl apply` time instead of surfacing later as a status condition.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Group of every resource this operator serves; also the prefix of its annotations.
pub const GROUP: &str = "credentials.adobe-operator.io";
/// Adobe IMS production endpoint, used when a flow does not name one.
pub const DEFAULT_IMS_ENDPOINT: &str = "https://ims-na1.adobelogin.com";

// The printcolumn(...) arguments repeat `type_ = "string"` by design.
#[allow(clippy::duplicated_attributes)]
/// Desired state of an AdobeCredential: where the client credentials come from, how to mint a
/// token with them, and which Secret receives the token.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "credentials.adobe-operator.io",
    version = "v1alpha1",
    kind = "AdobeCredential",
    plural = "adobecredentials",
    shortname = "adobecred",
    category = "adobe",
    namespaced,
    status = "AdobeCredentialStatus",
    doc = "Mints an Adobe IMS (or other OAuth2) access token from client credentials held in a Secret, writes it into a target Secret and renews it before it expires or when the source Secret changes.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(name = "Flow", type_ = "string", json_path = ".status.flow"),
    printcolumn(name = "Target", type_ = "string", json_path = ".status.targetSecret"),
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("[has(self.oauthServerToServer), has(self.serviceAccountJWT), has(self.passwordGrant), has(self.oauthWebApp)].filter(x, x).size() == 1").message("exactly one flow block must be set: oauthServerToServer, serviceAccountJWT, passwordGrant or oauthWebApp"))]
#[serde(rename_all = "camelCase")]
pub struct AdobeCredentialSpec {
    /// Adobe "OAuth Server-to-Server" credential (client_credentials grant at IMS /ims/token/v3):
    /// Firefly, Admin (User Management), Cloud Manager and most Adobe APIs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth_server_to_server: Option<OAuthServerToServer>,

    /// Adobe "Service Account (JWT)" credential, deprecated by Adobe (end of life 2025-06-30):
    /// an RS256 JWT signed with the credential's private key is exchanged at
    /// /ims/exchange/jwt. Migrate to oauthServerToServer with the same client ID and scopes.
    #[serde(default, rename = "serviceAccountJWT", skip_serializing_if = "Option::is_none")]
    pub service_account_jwt: Option<ServiceAccountJwt>,

    /// OAuth2 password grant with refresh tokens (Akeneo PIM API connections): client ID and
    /// secret sent as HTTP Basic, API user and password in a JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_grant: Option<PasswordGrant>,

    /// Adobe "OAuth Web App" credential (user authentication): the operator keeps a user's
    /// refresh token chain alive (refresh_token grant at IMS /ims/token/v3, a new refresh token
    /// on every refresh) starting from the refresh token in `refreshTokenRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth_web_app: Option<OAuthWebApp>,

    /// The Secret that receives the token (in each selected namespace, for a
    /// ClusterAdobeCredential). Defaults to `<metadata.name>-token`, created and owned by this
    /// resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetSpec>,

    /// When to renew. Defaults to one third of the token lifetime before expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal: Option<RenewalSpec>,

    /// Workloads (in the target Secret's namespace) restarted when the token in it changes, for
    /// consumers that read it once at start-up (environment variables). The operator patches
    /// their pod template annotations, as `kubectl rollout restart` does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub rollout_restart_targets: Vec<RolloutRestartTarget>,
}

/// A workload to restart when the token changes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRestartTarget {
    /// Deployment, StatefulSet or DaemonSet.
    pub kind: WorkloadKind,
    /// Name of the workload in the resource's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Kinds of workload that can be restarted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// Last restart of a rollout target.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRestartStatus {
    pub kind: WorkloadKind,
    pub name: String,
    /// When the operator last restarted it for a token change (absent if never, or not found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_at: Option<String>,
    /// Why it was not restarted, e.g. "not found".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Adobe OAuth Server-to-Server credential.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.clientSecretRotation) || (has(self.clientSecretRef.secondaryClientSecretKey) && self.clientSecretRef.secondaryClientSecretKey != self.clientSecretRef.clientSecretKey)").message("clientSecretRotation needs clientSecretRef.secondaryClientSecretKey (a key other than clientSecretKey): the previous client secret is kept there until the new one is in use"))]
#[serde(rename_all = "camelCase")]
pub struct OAuthServerToServer {
    /// Secret (same namespace) holding the client ID and client secret from the Adobe Developer
    /// Console.
    pub client_secret_ref: ClientSecretRef,

    /// OAuth scopes to request, one per item (the operator joins them with commas as Adobe IMS
    /// expects). Example for Firefly: openid, AdobeID, session, additional_info,
    /// read_organizations, firefly_api, ff_apis.
    #[schemars(length(min = 1, max = 64), inner(regex(pattern = r"^[^,\s]+$"), length(min = 1, max = 256)))]
    pub scopes: Vec<String>,

    /// Base URL of Adobe IMS. Must be https. The host must be on the operator's allowlist.
    #[serde(default = "default_ims_endpoint")]
    #[x_kube(validation = Rule::new("self.startsWith('https://')").message("imsEndpoint must be an https:// URL"))]
    #[schemars(length(max = 512))]
    pub ims_endpoint: String,

    /// Adobe organization ID (`…@AdobeOrg`). Written to the target Secret as `org_id` (Cloud
    /// Manager needs it as the `x-gw-ims-org-id` header); not sent to IMS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9]+@AdobeOrg$"))]
    pub org_id: Option<String>,

    /// Rotates the client secret through Adobe's I/O Management API, on a schedule (`every`)
    /// and on demand (annotation `credentials.adobe-operator.io/rotate-client-secret` set to a
    /// new value): a new secret is added, verified, written to the source Secret (the previous
    /// one kept under `secondaryClientSecretKey`), used for a token, and the previous one is
    /// deleted after the grace period. Needs the operator's rotation switch
    /// (`--client-secret-rotation`) and the I/O Management API in the credential's project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_rotation: Option<ClientSecretRotation>,
}

/// Default base URL of Adobe's I/O Management API.
pub const DEFAULT_MANAGEMENT_ENDPOINT: &str = "https://api.adobe.io";

/// Rotation of an OAuth Server-to-Server client secret through the I/O Management API.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClientSecretRotation {
    /// Numeric organization ID from the Developer Console URL
    /// `…/console/projects/{orgId}/{projectId}/credentials/{credentialId}/details/…` (not the
    /// `…@AdobeOrg` ID).
    #[schemars(regex(pattern = r"^[0-9]{1,32}$"))]
    pub org_id: String,
    /// Numeric credential ID from the same URL.
    #[schemars(regex(pattern = r"^[0-9]{1,32}$"))]
    pub credential_id: String,
    /// Rotate when the client secret is this old (its creation time at Adobe, then the last
    /// rotation), e.g. `90d`, `30d12h`; between 1h and 3650d. Without it, only on demand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,7}(d|h|m|s))+$"), length(max = 32))]
    pub every: Option<String>,
    /// How long the previous client secret stays after the new one is in use, for other readers
    /// of the source Secret to pick the new one up; it is deleted only when nothing used it for
    /// this long (default `1h`, at most `30d`; `0s` deletes at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]{1,7}(d|h|m|s))+$"), length(max = 32))]
    pub grace_period: Option<String>,
    /// Base URL of the I/O Management API; its host must be on the operator's allowlist.
    #[serde(default = "default_management_endpoint")]
    #[x_kube(validation = Rule::new("self.startsWith('https://')").message("managementEndpoint must be an https:// URL"))]
    #[schemars(length(max = 512))]
    pub management_endpoint: String,
    /// When the credential already has two client secrets and one is not the source Secret's,
    /// delete that other one to make room, once it has been unused for the grace period (until
    /// then the rotation waits, reason `OtherSecretStillInUse`; irreversible: whoever uses it
    /// loses access). Without it, such a rotation is refused with reason `TwoClientSecretsExist`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete_other_secret: bool,
}

fn default_management_endpoint() -> String {
    DEFAULT_MANAGEMENT_ENDPOINT.to_owned()
}

/// Adobe Service Account (JWT) credential, legacy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountJwt {
    /// Secret holding the client ID and client secret.
    pub client_secret_ref: ClientSecretRef,
    /// Secret holding the PEM private key (PKCS#1 or PKCS#8, unencrypted) whose certificate is
    /// registered with the credential in the Adobe Developer Console.
    pub private_key_ref: PrivateKeyRef,
    /// Adobe organization ID (`…@AdobeOrg`), the JWT's `iss`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9]+@AdobeOrg$"))]
    pub org_id: String,
    /// Technical account ID (`…@techacct.adobe.com`), the JWT's `sub`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9]+@techacct\.adobe\.com$"))]
    pub technical_account_id: String,
    /// Metascopes of the credential, e.g. ent_cloudmgr_sdk, ent_user_sdk.
    #[schemars(length(min = 1, max = 32), inner(regex(pattern = r"^[A-Za-z0-9_.-]+$")))]
    pub metascopes: Vec<String>,
    /// Base URL of Adobe IMS. Must be https.
    #[serde(default = "default_ims_endpoint")]
    #[x_kube(validation = Rule::new("self.startsWith('https://')").message("imsEndpoint must be an https:// URL"))]
    #[schemars(length(max = 512))]
    pub ims_endpoint: String,
}

/// Reference to a Secret key holding a PEM private key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrivateKeyRef {
    /// Name of the Secret (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the PEM private key.
    #[serde(default = "default_private_key_key")]
    pub key: String,
}

fn default_private_key_key() -> String {
    "private.key".to_owned()
}

/// OAuth2 password grant (Akeneo PIM).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PasswordGrant {
    /// Token endpoint, e.g. https://pim.example.com/api/oauth/v1/token. Must be https and its
    /// host on the operator's allowlist.
    #[x_kube(validation = Rule::new("self.startsWith('https://')").message("tokenUrl must be an https:// URL"))]
    #[schemars(length(max = 512))]
    pub token_url: String,
    /// Secret holding the client ID and secret of the API connection.
    pub client_secret_ref: ClientSecretRef,
    /// Secret holding the API user's name and password.
    pub user_secret_ref: UserSecretRef,
}

/// Reference to a Secret holding a username and password.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserSecretRef {
    /// Name of the Secret (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the username.
    #[serde(default = "default_username_key")]
    pub username_key: String,
    /// Key holding the password.
    #[serde(default = "default_password_key")]
    pub password_key: String,
}

fn default_username_key() -> String {
    "username".to_owned()
}

fn default_password_key() -> String {
    "password".to_owned()
}

/// Adobe OAuth Web App credential (user authentication).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OAuthWebApp {
    /// Secret (same namespace) holding the client ID and client secret of the OAuth Web App
    /// credential.
    pub client_secret_ref: ClientSecretRef,
    /// Secret key (same namespace) holding the user's initial refresh token. The operator
    /// persists each rotated refresh token in its own `<name>-refresh-state` Secret; putting a
    /// new refresh token here starts a new chain.
    pub refresh_token_ref: RefreshTokenRef,
    /// Scopes the user consented to; must include offline_access, without which IMS issues no
    /// refresh token.
    #[x_kube(validation = Rule::new("self.exists(s, s == 'offline_access')").message("scopes must include offline_access"))]
    #[schemars(length(min = 1, max = 64), inner(regex(pattern = r"^[A-Za-z0-9_.:/-]+$")))]
    pub scopes: Vec<String>,
    /// Base URL of Adobe IMS. Must be https.
    #[serde(default = "default_ims_endpoint")]
    #[x_kube(validation = Rule::new("self.startsWith('https://')").message("imsEndpoint must be an https:// URL"))]
    #[schemars(length(max = 512))]
    pub ims_endpoint: String,
}

/// Reference to a Secret key holding a refresh token.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RefreshTokenRef {
    /// Name of the Secret (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the refresh token.
    #[serde(default = "default_refresh_token_key")]
    pub key: String,
}

fn default_refresh_token_key() -> String {
    "refresh_token".to_owned()
}

fn default_ims_endpoint() -> String {
    DEFAULT_IMS_ENDPOINT.to_owned()
}

/// Reference to a Secret in the resource's own namespace holding an OAuth client ID and secret.
/// There is deliberately no namespace field: a tenant must not read another tenant's Secret
/// through the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClientSecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the client ID.
    #[serde(default = "default_client_id_key")]
    pub client_id_key: String,
    /// Key holding the client secret.
    #[serde(default = "default_client_secret_key")]
    pub client_secret_key: String,
    /// Optional key holding a second client secret, for zero-downtime rotation (Adobe allows two
    /// at once): when the first is rejected as invalid_client, the second is tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_client_secret_key: Option<String>,
}

fn default_client_id_key() -> String {
    "client_id".to_owned()
}

fn default_client_secret_key() -> String {
    "client_secret".to_owned()
}

/// The Secret that receives the token.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TargetSpec {
    /// Name of the target Secret in the same namespace. Defaults to `<metadata.name>-token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,

    /// Who owns the target Secret: `Owner` (created by the operator, deleted with this resource),
    /// `Orphan` (created by the operator, kept when this resource is deleted) or `Merge` (an
    /// existing Secret the operator only adds its keys to).
    #[serde(default)]
    pub creation_policy: CreationPolicy,

    /// Extra keys rendered from the token (minijinja templates). Variables: `access_token`,
    /// `token_type`, `expires_at`, `expires_in` (the token's lifetime in seconds), `client_id`,
    /// `org_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TargetTemplate>,

    /// Prefix of the default keys (`access_token`, `token_type`, `expires_at`, `client_id`,
    /// `org_id`), e.g. `firefly_`: lets several `Merge` credentials share one Secret, each with
    /// its own keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]*$"), length(max = 64))]
    pub key_prefix: Option<String>,

    /// Key of a ready-to-use env file (`ADOBE_ACCESS_TOKEN`, `ADOBE_API_KEY`, `ADOBE_ORG_ID`,
    /// `ADOBE_TOKEN_EXPIRES_AT`), e.g. `adobe.env`, for `envFrom` or `source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub env_file_key: Option<String>,

    /// Key of a JSON document with the token, its type, expiry and client ID, e.g. `token.json`,
    /// for SDKs that read a credentials file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub json_key: Option<String>,
}

/// Who owns the target Secret.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CreationPolicy {
    /// Created by the operator with an ownerReference: deleted with the AdobeCredential.
    #[default]
    Owner,
    /// Created by the operator without an ownerReference: kept after the AdobeCredential is gone.
    Orphan,
    /// An existing Opaque Secret (or a new one) to which the operator adds only its own keys,
    /// as its own field manager: several credentials may merge into one Secret when their keys
    /// differ (`keyPrefix`); a key someone else wrote is a `TargetConflict`, never taken over.
    Merge,
}

/// Extra keys of the target Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TargetTemplate {
    /// Key → minijinja template, e.g. `authorization: "Bearer {{ access_token }}"`. Each render
    /// has a budget of steps and of output (64 KiB per key); over it is `InvalidTemplate`.
    #[serde(default)]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "string", "maxLength": 8192}))]
    pub data: BTreeMap<String, String>,
}

/// When the token is renewed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!(has(self.renewBefore) && has(self.renewBeforePercentage))").message("set renewBefore or renewBeforePercentage, not both"))]
#[serde(rename_all = "camelCase")]
pub struct RenewalSpec {
    /// Renew this long before expiry, as a duration such as `8h`, `30m` or `90s`. When it is
    /// longer than the token lifetime, one third of the lifetime is used instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(h|m|s))+$') && duration(self) >= duration('1s') && duration(self) <= duration('720h')").message("renewBefore must be a duration between 1s and 720h, e.g. 8h, 30m or 1h30m"))]
    #[schemars(length(max = 32))]
    pub renew_before: Option<String>,

    /// Renew when this percentage of the lifetime is left (1–90).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 90))]
    pub renew_before_percentage: Option<u8>,
}

/// Observed state, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AdobeCredentialStatus {
    /// `Ready` is True while the target Secret holds an unexpired token minted from the current
    /// inputs; its reason names the last outcome (e.g. TokenMinted, InvalidClient).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation of the spec the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The flow in use (oauthServerToServer, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    /// Name of the target Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_secret: Option<String>,
    /// When the token in the target Secret expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// When the operator renews the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<Time>,
    /// When the current token was minted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_mint_time: Option<Time>,
    /// SHA-256 over every input of the mint (endpoint, flow settings, client ID and secret, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_revision: Option<String>,
    /// Short SHA-256 of the current token, to tell tokens apart without revealing them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_fingerprint: Option<String>,
    /// Failed mint attempts since the last success.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// The rollout restart targets and when each was last restarted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollout_restarts: Vec<RolloutRestartStatus>,
    /// Client secret rotation (`spec.oauthServerToServer.clientSecretRotation`); the condition
    /// `ClientSecretRotation` says whether it works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_rotation: Option<ClientSecretRotationStatus>,
}

/// Where the client secret rotation stands. Secret values never appear here, only uuids.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClientSecretRotationStatus {
    /// The step in progress: `Idle`, `Adding`, `Verifying`, `Abandoning`, `SwitchingSource`,
    /// `WaitingForGrace` (the previous secret is deleted next).
    pub step: String,
    /// The Developer Console uuid of the client secret the source Secret holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_secret_uuid: Option<String>,
    /// When that secret was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_secret_created_at: Option<Time>,
    /// The uuid of the secret being rotated in, during a rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_secret_uuid: Option<String>,
    /// When the last rotation completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<Time>,
    /// When the next scheduled rotation starts (absent without `every`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_time: Option<Time>,
}

// The printcolumn(...) arguments repeat `type_ = "string"` by design.
#[allow(clippy::duplicated_attributes)]
/// Desired state of a ClusterAdobeCredential: one integration whose source Secrets live in the
/// operator's cluster-credential namespace (never a tenant's), minted once per lifetime, and the
/// same token written to the target Secret of every selected namespace. The target's
/// `creationPolicy: Owner` (the default) removes it from namespaces that stop matching and when
/// this resource is deleted; `Orphan` leaves it in place. Rollout restart targets are restarted
/// in each selected namespace where they exist.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "credentials.adobe-operator.io",
    version = "v1alpha1",
    kind = "ClusterAdobeCredential",
    plural = "clusteradobecredentials",
    shortname = "clusteradobecred",
    category = "adobe",
    status = "ClusterAdobeCredentialStatus",
    doc = "Mints one Adobe IMS (or other OAuth2) access token from client credentials held in the operator's cluster-credential namespace and writes it into a target Secret in every selected namespace.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(name = "Flow", type_ = "string", json_path = ".status.flow"),
    printcolumn(name = "Namespaces", type_ = "integer", json_path = ".status.namespaces.written"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.namespaces.failed"),
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("!has(self.oauthWebApp)").message("oauthWebApp is not served by a ClusterAdobeCredential: a user's sign-in belongs to one namespace's AdobeCredential"))]
#[x_kube(validation = Rule::new("!has(self.target) || !has(self.target.creationPolicy) || self.target.creationPolicy != 'Merge'").message("a ClusterAdobeCredential owns its target Secrets: creationPolicy is Owner (removed from namespaces that stop matching) or Orphan (left in place)"))]
#[serde(rename_all = "camelCase")]
pub struct ClusterAdobeCredentialSpec {
    /// The flow block, target, renewal and rollout restart targets, as in an AdobeCredential
    /// (one type for both, flattened into the spec).
    #[serde(flatten)]
    pub credential: AdobeCredentialSpec,

    /// Namespaces whose labels match get the target Secret. `{}` selects every namespace;
    /// absent selects none (only those in `namespaces`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Namespaces that get the target Secret whatever their labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 63)))]
    pub namespaces: Vec<String>,
}

/// Observed state of a ClusterAdobeCredential.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAdobeCredentialStatus {
    /// `Ready`: the token, as for an AdobeCredential. `Distributed`: every selected namespace
    /// holds it (False names the first failure's reason).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    /// Name of the target Secret in each selected namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_secret: Option<String>,
    /// The AdobeCredential in the cluster-credential namespace that mints for this resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minted_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_mint_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_fingerprint: Option<String>,
    /// How many namespaces are selected, hold the current token, and failed.
    #[serde(default)]
    pub namespaces: NamespaceCounts,
    /// The first failed namespaces (at most 10), with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_namespaces: Vec<NamespaceFailure>,
}

/// Namespace counts of a ClusterAdobeCredential.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NamespaceCounts {
    pub selected: u32,
    pub written: u32,
    pub failed: u32,
}

/// A namespace whose target Secret could not be written.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NamespaceFailure {
    pub namespace: String,
    pub reason: String,
    pub message: String,
}

impl ClusterAdobeCredential {
    /// Name of the target Secret in each selected namespace.
    pub fn target_name(&self) -> String {
        match self.spec.credential.target.as_ref().and_then(|t| t.name.clone()) {
            Some(name) => name,
            None => format!("{}-token", self.metadata.name.as_deref().unwrap_or_default()),
        }
    }
}

impl AdobeCredential {
    /// Name of the target Secret.
    pub fn target_name(&self) -> String {
        match self.spec.target.as_ref().and_then(|t| t.name.clone()) {
            Some(name) => name,
            None => format!("{}-token", self.metadata.name.as_deref().unwrap_or_default()),
        }
    }

    pub fn creation_policy(&self) -> CreationPolicy {
        self.spec.target.as_ref().map(|t| t.creation_policy).unwrap_or_default()
    }
}

/// Every CRD the operator serves.
pub fn crds() -> [CustomResourceDefinition; 2] {
    [AdobeCredential::crd(), ClusterAdobeCredential::crd()]
}

/// The CRD with this plural name as YAML, exactly as `crds/<plural>.yaml` holds it.
pub fn crd_yaml(plural: &str) -> Option<Result<String, serde_yaml::Error>> {
    let crd = crds().into_iter().find(|crd| crd.spec.names.plural == plural)?;
    let yaml = serde_yaml::to_string(&crd)
        .map(|yaml| format!("# Generated by `adobe-credential-operator crd {plural}`; do not edit.\n{yaml}"));
    Some(yaml)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_has_status_subresource_and_printer_columns() {
        let crd = AdobeCredential::crd();
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some());
        let columns: Vec<_> = version.additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
        for expected in ["Ready", "Flow", "Target", "Expires", "Age"] {
            assert!(columns.contains(&expected), "missing column {expected}");
        }
    }

    #[test]
    fn crd_yaml_carries_cel_rules_and_scope_pattern() {
        let yaml = crd_yaml("adobecredentials").expect("known").expect("serializes");
        assert!(yaml.contains("x-kubernetes-validations"));
        assert!(yaml.contains("has(self.serviceAccountJWT)"));
        assert!(yaml.contains(r"^[^,\s]+$"));
    }

    #[test]
    fn target_name_defaults_to_resource_name_with_suffix() {
        let cred = AdobeCredential::new("firefly", AdobeCredentialSpec::default());
        assert_eq!(cred.target_name(), "firefly-token");
        assert_eq!(cred.creation_policy(), CreationPolicy::Owner);
    }
}
