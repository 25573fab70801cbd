//! The target Secret: what goes into it, whether an existing one is ours and still holds a good
//! token, and the server-side apply that writes it.

use std::collections::BTreeMap;

use base64::Engine;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::crd::{AdobeCredential, CreationPolicy};
use crate::error::{Error, Result};
use crate::flows::Flow;
use crate::names::{FIELD_MANAGER, MANAGED_BY_LABEL, annotation};
use crate::secret_value::{SecretValue, sha256_hex};
use crate::time_format::rfc3339;

pub const ACCESS_TOKEN_KEY: &str = "access_token";
pub const TOKEN_TYPE_KEY: &str = "token_type";

/// Instructions one template key may execute (minijinja fuel): plenty for string formatting,
/// far too little for a loop that would hold a runtime thread.
pub const TEMPLATE_FUEL: u64 = 50_000;
/// Largest value of one target key, and of all keys together (the API server's limit for a whole
/// Secret is 1 MiB).
pub const MAX_KEY_BYTES: usize = 64 * 1024;
pub const MAX_TARGET_BYTES: usize = 256 * 1024;

static RENDER_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The field manager of one credential's writes to its target Secret: several `Merge`
/// credentials share a Secret, each owning only its keys. At most 128 characters.
pub fn field_manager(cred: &AdobeCredential) -> String {
    format!("{FIELD_MANAGER}/{}", bounded(&cred.name_any(), 100))
}

/// `name` if it is at most `max` characters, else a prefix and a hash of it: unique per name and
/// valid wherever a resource name is (annotation names, field managers).
pub fn bounded(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    let digest = sha256_hex(name);
    format!("{}-{}", &name[..max - 9], &digest[..8])
}

/// Annotation key `base` as one credential writes it: shared (`Owner`/`Orphan`, one credential
/// per Secret) or suffixed with the credential's name (`Merge`, several per Secret).
fn annotation_key(cred: &AdobeCredential, base: &str) -> String {
    match cred.creation_policy() {
        CreationPolicy::Merge => format!("{base}.{}", bounded(&cred.name_any(), 40)),
        _ => base.to_owned(),
    }
}

/// Name of a default key, with the target's `keyPrefix`.
pub fn default_key(cred: &AdobeCredential, key: &str) -> String {
    let prefix = cred.spec.target.as_ref().and_then(|t| t.key_prefix.as_deref()).unwrap_or_default();
    format!("{prefix}{key}")
}

/// A token as stored in (or about to be written to) the target Secret.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredToken {
    pub access_token: SecretValue,
    pub token_type: String,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    /// Revision of the inputs the token was minted from.
    pub revision: String,
    /// Key of the client secret the token endpoint accepted (a rotation may add a second one).
    pub client_secret_key: Option<String>,
}

impl StoredToken {
    pub fn fingerprint(&self) -> String {
        self.access_token.fingerprint()
    }
}

/// What the target Secret currently is, from this credential's point of view.
#[derive(Debug)]
pub enum TargetState {
    Missing,
    /// Exists, is not ours, and the policy forbids taking it over.
    Conflict,
    /// A ClusterAdobeCredential's copy (named here): that resource's alone, even to `Merge`.
    ClusterCopy(String),
    /// Open to merging by policy, but not an Opaque Secret (a service-account token, TLS or
    /// docker-config Secret, whose consumers would break).
    NotOpaque(String),
    /// Ours (or open to merging); `token` is the stored token when it is intact (present, with
    /// annotations that match its fingerprint).
    Present {
        token: Option<StoredToken>,
        secret: Box<Secret>,
    },
}

pub fn inspect(cred: &AdobeCredential, existing: Option<Secret>) -> TargetState {
    let Some(secret) = existing else { return TargetState::Missing };
    if let Some(cluster_credential) = secret.annotations().get(annotation::CLUSTER_CREDENTIAL) {
        // Its writer replaces it whole on every new token: merged keys would be lost or fought over.
        return TargetState::ClusterCopy(cluster_credential.clone());
    }
    let name = cred.name_any();
    let ours = secret.annotations().get(&annotation_key(cred, annotation::CREDENTIAL)) == Some(&name)
        || secret.owner_references().iter().any(|o| Some(&o.uid) == cred.uid().as_ref());
    let merge = cred.creation_policy() == CreationPolicy::Merge;
    if !ours && !merge {
        return TargetState::Conflict;
    }
    if let Some(type_) = secret.type_.as_ref().filter(|t| merge && t.as_str() != "Opaque") {
        return TargetState::NotOpaque(type_.clone());
    }
    let token = if ours { stored_token(cred, &secret) } else { None };
    TargetState::Present { token, secret: Box::new(secret) }
}

fn stored_token(cred: &AdobeCredential, secret: &Secret) -> Option<StoredToken> {
    let annotations = secret.annotations();
    let note = |base: &str| annotations.get(&annotation_key(cred, base));
    let data = secret.data.as_ref()?;
    let text = |key: &str| data.get(&default_key(cred, key)).and_then(|v| String::from_utf8(v.0.clone()).ok());
    let token = StoredToken {
        access_token: SecretValue::new(text(ACCESS_TOKEN_KEY)?),
        token_type: text(TOKEN_TYPE_KEY).unwrap_or_else(|| "bearer".into()),
        issued_at: note(annotation::ISSUED_AT)?.parse().ok()?,
        expires_at: note(annotation::EXPIRES_AT)?.parse().ok()?,
        revision: note(annotation::SOURCE_REVISION)?.clone(),
        client_secret_key: note(annotation::CLIENT_SECRET_KEY).cloned(),
    };
    // A token edited by hand no longer matches the fingerprint we recorded with it.
    (note(annotation::TOKEN_FINGERPRINT) == Some(&token.fingerprint())).then_some(token)
}

/// The first of `keys` that the Secret holds but this credential did not write (another
/// credential, a person, a Helm release): a `Merge` credential never takes a key over. Returns
/// the key and the writer that owns it, as far as managedFields tell.
pub fn foreign_key<'a>(
    cred: &AdobeCredential,
    secret: &Secret,
    keys: impl IntoIterator<Item = &'a String>,
) -> Option<(String, String)> {
    // An Owner or Orphan target is the credential's alone: hand edits are repaired, not obeyed.
    if cred.creation_policy() != CreationPolicy::Merge {
        return None;
    }
    let data = secret.data.as_ref()?;
    let ours = field_manager(cred);
    let owners = |key: &str| -> Vec<&str> {
        let field = format!("f:{key}");
        secret
            .managed_fields()
            .iter()
            .filter(|m| m.fields_v1.as_ref().is_some_and(|f| f.0.get("f:data").and_then(|d| d.get(&field)).is_some()))
            .filter_map(|m| m.manager.as_deref())
            .collect()
    };
    keys.into_iter().filter(|k| data.contains_key(*k)).find_map(|key| {
        let owners = owners(key);
        // The shared manager of earlier versions wrote only this operator's keys.
        let mine = owners.iter().any(|m| *m == ours || *m == FIELD_MANAGER);
        (!mine).then(|| (key.clone(), owners.first().map_or("another writer", |m| *m).to_owned()))
    })
}

/// Renders every key the target Secret gets: the default keys plus template keys.
pub fn render_data(cred: &AdobeCredential, token: &StoredToken, inputs: &dyn Flow) -> Result<BTreeMap<String, String>> {
    // The lifetime, not the time left: rendered values must not change between reconciles.
    let expires_in = token.expires_at.duration_since(token.issued_at).as_secs().max(0);
    let key = |name: &str| default_key(cred, name);
    let mut data = BTreeMap::from([
        (key(ACCESS_TOKEN_KEY), token.access_token.expose().to_owned()),
        (key(TOKEN_TYPE_KEY), token.token_type.clone()),
        (key("expires_at"), rfc3339(token.expires_at)),
        (key("client_id"), inputs.client_id().to_owned()),
    ]);
    if let Some(org) = inputs.org_id() {
        data.insert(key("org_id"), org.to_owned());
    }
    let spec = cred.spec.target.as_ref();
    if let Some(key) = spec.and_then(|t| t.env_file_key.as_ref()) {
        data.insert(key.clone(), env_file(token, inputs));
    }
    if let Some(key) = spec.and_then(|t| t.json_key.as_ref()) {
        let document = serde_json::json!({
            "access_token": token.access_token.expose(),
            "token_type": token.token_type,
            "expires_at": rfc3339(token.expires_at),
            "expires_in": expires_in,
            "client_id": inputs.client_id(),
            "org_id": inputs.org_id(),
        });
        data.insert(key.clone(), document.to_string());
    }
    let templates = spec.and_then(|t| t.template.as_ref());
    if let Some(template) = templates.filter(|t| !t.data.is_empty()) {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_fuel(Some(TEMPLATE_FUEL));
        let context = minijinja::context! {
            access_token => token.access_token.expose(),
            token_type => &token.token_type,
            expires_at => rfc3339(token.expires_at),
            expires_in => expires_in,
            client_id => inputs.client_id(),
            org_id => inputs.org_id().unwrap_or_default(),
        };
        // One render at a time in the whole process: a single minijinja operation may still
        // build a value of up to 100 MB (its own cap on string repetition) before the output cap
        // refuses it, and hostile templates reconciled side by side must not add those up. Each
        // render is short (fuel and output caps), so the wait is too.
        let _one_at_a_time = RENDER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        for (key, source) in &template.data {
            let rendered = render_template(&env, key, source, &context)?;
            data.insert(key.clone(), rendered);
        }
    }
    let total: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_TARGET_BYTES {
        return Err(Error::InvalidTemplate {
            key: "(all keys)".into(),
            detail: format!("the target Secret would hold {total} bytes, over the limit of {MAX_TARGET_BYTES}"),
        });
    }
    Ok(data)
}

/// Renders one template key within its budgets: [`TEMPLATE_FUEL`] instructions and
/// [`MAX_KEY_BYTES`] of output. The error names the problem, never the rendered (secret) text.
fn render_template(
    env: &minijinja::Environment<'_>,
    key: &str,
    source: &str,
    context: &minijinja::Value,
) -> Result<String> {
    let invalid = |detail: String| Error::InvalidTemplate { key: key.to_owned(), detail };
    let template = env.template_from_str(source).map_err(|e| invalid(e.kind().to_string()))?;
    let mut out = CappedWriter { bytes: Vec::new(), cap: MAX_KEY_BYTES, overflowed: false };
    match template.render_captured_to(context, &mut out) {
        _ if out.overflowed => Err(invalid(format!("the output is longer than {MAX_KEY_BYTES} bytes"))),
        Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => {
            Err(invalid(format!("the template needs more than {TEMPLATE_FUEL} steps")))
        }
        Err(e) => Err(invalid(e.kind().to_string())),
        Ok(_) => String::from_utf8(out.bytes).map_err(|_| invalid("the output is not UTF-8".into())),
    }
}

/// Collects output up to `cap` bytes and refuses the rest, so an oversized render fails at the
/// cap instead of growing a buffer.
struct CappedWriter {
    bytes: Vec<u8>,
    cap: usize,
    overflowed: bool,
}

impl std::io::Write for CappedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > self.cap {
            self.overflowed = true;
            return Err(std::io::Error::other("output over budget"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `KEY=value` lines; values are quoted only when they need it (tokens and IDs never do).
fn env_file(token: &StoredToken, inputs: &dyn Flow) -> String {
    let mut lines = vec![
        format!("ADOBE_ACCESS_TOKEN={}", token.access_token.expose()),
        format!("ADOBE_API_KEY={}", inputs.client_id()),
    ];
    if let Some(org) = inputs.org_id() {
        lines.push(format!("ADOBE_ORG_ID={org}"));
    }
    lines.push(format!("ADOBE_TOKEN_EXPIRES_AT={}", rfc3339(token.expires_at)));
    lines.join("\n") + "\n"
}

/// Annotations recorded with a token.
fn token_annotations(cred: &AdobeCredential, token: &StoredToken) -> BTreeMap<String, String> {
    let key = |base: &str| annotation_key(cred, base);
    let mut annotations = BTreeMap::from([
        (key(annotation::CREDENTIAL), cred.name_any()),
        (key(annotation::EXPIRES_AT), token.expires_at.to_string()),
        (key(annotation::ISSUED_AT), token.issued_at.to_string()),
        (key(annotation::SOURCE_REVISION), token.revision.clone()),
        (key(annotation::TOKEN_FINGERPRINT), token.fingerprint()),
    ]);
    if let Some(secret_key) = &token.client_secret_key {
        annotations.insert(key(annotation::CLIENT_SECRET_KEY), secret_key.clone());
    }
    annotations
}

/// True when the existing Secret already holds exactly what an apply would write.
pub fn is_up_to_date(
    cred: &AdobeCredential,
    secret: &Secret,
    token: &StoredToken,
    data: &BTreeMap<String, String>,
) -> bool {
    let existing = secret.data.clone().unwrap_or_default();
    let data_ok = data.iter().all(|(k, v)| existing.get(k).map(|b| b.0.as_slice()) == Some(v.as_bytes()));
    let annotations = secret.annotations();
    let annotations_ok = token_annotations(cred, token).iter().all(|(k, v)| annotations.get(k) == Some(v));
    let owner_ok = match cred.creation_policy() {
        CreationPolicy::Owner => secret.owner_references().iter().any(|o| Some(&o.uid) == cred.uid().as_ref()),
        _ => true,
    };
    data_ok && annotations_ok && owner_ok
}

/// Writes the token with server-side apply, as the credential's own field manager. Returns the
/// new resourceVersion. A `Merge` write never forces: a key another writer owns is a conflict.
pub async fn apply(
    secrets: &Api<Secret>,
    cred: &AdobeCredential,
    token: &StoredToken,
    data: &BTreeMap<String, String>,
) -> Result<Option<String>> {
    let name = cred.target_name();
    let b64 = base64::engine::general_purpose::STANDARD;
    let encoded: BTreeMap<&String, String> = data.iter().map(|(k, v)| (k, b64.encode(v))).collect();
    let mut metadata = json!({ "name": name, "annotations": token_annotations(cred, token) });
    let policy = cred.creation_policy();
    // A merged Secret keeps its own labels (e.g. a Helm release's managed-by) and type.
    if policy != CreationPolicy::Merge {
        metadata["labels"] = json!({ MANAGED_BY_LABEL: FIELD_MANAGER });
    }
    if policy == CreationPolicy::Owner
        && let Some(owner) = cred.controller_owner_ref(&())
    {
        metadata["ownerReferences"] = json!([owner]);
    }
    let mut body = json!({ "apiVersion": "v1", "kind": "Secret", "metadata": metadata, "data": encoded });
    if policy != CreationPolicy::Merge {
        body["type"] = json!("Opaque");
    }
    let params = PatchParams::apply(&field_manager(cred));
    let forced = params.clone().force();
    let first = if policy == CreationPolicy::Merge { &params } else { &forced };
    let written = match secrets.patch(&name, first, &Patch::Apply(&body)).await {
        // Keys written by this operator's shared field manager of earlier versions are taken
        // over by the credential's own manager (an upgrade); anyone else's are a conflict.
        Err(kube::Error::Api(status)) if status.code == 409 && only_legacy_conflicts(&status.message) => {
            secrets.patch(&name, &forced, &Patch::Apply(&body)).await
        }
        other => other,
    };
    match written {
        Ok(written) => Ok(written.resource_version()),
        Err(kube::Error::Api(status)) if status.code == 409 => Err(apply_conflict(&name, &status.message)),
        Err(err) => Err(Error::kube("writing the target Secret")(err)),
    }
}

/// The key and writer named by a server-side apply conflict, e.g. `Apply failed with 1 conflict:
/// conflict with "kubectl-edit" using v1: .data.access_token`.
fn apply_conflict(name: &str, message: &str) -> Error {
    let manager = message.split('"').nth(1).unwrap_or("another writer").to_owned();
    let key = message.split(".data.").nth(1).and_then(|k| k.split_whitespace().next()).unwrap_or("?");
    Error::TargetKeyConflict { name: name.to_owned(), key: key.to_owned(), manager }
}

/// Whether every writer a conflict message names (the quoted manager names) is this operator's
/// shared field manager of earlier versions.
fn only_legacy_conflicts(message: &str) -> bool {
    let mut managers = message.split('"').skip(1).step_by(2).peekable();
    managers.peek().is_some() && managers.all(|m| m == FIELD_MANAGER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{AdobeCredentialSpec, TargetSpec, TargetTemplate};
    use crate::flows::ServerToServerInputs;
    use k8s_openapi::ByteString;

    fn cred(policy: CreationPolicy, template: &[(&str, &str)]) -> AdobeCredential {
        let mut c = AdobeCredential::new(
            "firefly",
            AdobeCredentialSpec {
                target: Some(TargetSpec {
                    name: None,
                    creation_policy: policy,
                    template: Some(TargetTemplate {
                        data: template.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                    }),
                    key_prefix: None,
                    env_file_key: Some("adobe.env".into()),
                    json_key: Some("token.json".into()),
                }),
                ..Default::default()
            },
        );
        c.metadata.uid = Some("uid-1".into());
        c.metadata.namespace = Some("team-a".into());
        c
    }

    fn token() -> StoredToken {
        StoredToken {
            access_token: SecretValue::new("eyJ.token.sig"),
            token_type: "bearer".into(),
            issued_at: "2026-11-24T00:00:00Z".parse().expect("ts"),
            expires_at: "2026-11-25T00:00:00Z".parse().expect("ts"),
            revision: "sha256:rev".into(),
            client_secret_key: Some("client_secret".into()),
        }
    }

    fn inputs() -> ServerToServerInputs {
        ServerToServerInputs {
            ims_endpoint: "https://ims-na1.adobelogin.com".into(),
            client: crate::source::OAuthClient {
                client_id: "client-1".into(),
                secrets: vec![("client_secret".into(), SecretValue::new("s"))],
                notes: vec![],
            },
            scopes: vec!["openid".into()],
            org_id: Some("ORG@AdobeOrg".into()),
        }
    }

    fn secret_with(cred: &AdobeCredential, data: &BTreeMap<String, String>, tok: &StoredToken) -> Secret {
        let mut s = Secret::default();
        s.metadata.annotations = Some(token_annotations(cred, tok));
        s.metadata.owner_references = cred.controller_owner_ref(&()).map(|o| vec![o]);
        s.data = Some(data.iter().map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec()))).collect());
        s
    }

    #[test]
    fn renders_default_and_template_keys() {
        let c = cred(CreationPolicy::Owner, &[("authorization", "Bearer {{ access_token }}")]);
        let data = render_data(&c, &token(), &inputs()).expect("render");
        assert_eq!(data["access_token"], "eyJ.token.sig");
        assert_eq!(data["token_type"], "bearer");
        assert_eq!(data["expires_at"], "2026-11-25T00:00:00Z");
        assert_eq!(data["client_id"], "client-1");
        assert_eq!(data["org_id"], "ORG@AdobeOrg");
        assert_eq!(data["authorization"], "Bearer eyJ.token.sig");
        assert_eq!(
            data["adobe.env"],
            "ADOBE_ACCESS_TOKEN=eyJ.token.sig\nADOBE_API_KEY=client-1\nADOBE_ORG_ID=ORG@AdobeOrg\nADOBE_TOKEN_EXPIRES_AT=2026-11-25T00:00:00Z\n"
        );
        let json: serde_json::Value = serde_json::from_str(&data["token.json"]).expect("json");
        assert_eq!(json["access_token"], "eyJ.token.sig");
        assert_eq!(json["expires_in"], 86400);
        assert_eq!(json["org_id"], "ORG@AdobeOrg");
    }

    #[test]
    fn template_errors_name_the_key_not_the_token() {
        let c = cred(CreationPolicy::Owner, &[("bad", "{{ access_token }} {{ nope }}")]);
        let err = render_data(&c, &token(), &inputs()).unwrap_err();
        assert_eq!(err.reason(), "InvalidTemplate");
        assert!(err.to_string().contains("\"bad\""));
        assert!(!err.to_string().contains("eyJ.token.sig"));
    }

    #[test]
    fn ours_is_adopted_and_tampering_is_detected() {
        let c = cred(CreationPolicy::Owner, &[]);
        let tok = token();
        let data = render_data(&c, &tok, &inputs()).expect("render");
        let secret = secret_with(&c, &data, &tok);
        match inspect(&c, Some(secret.clone())) {
            TargetState::Present { token: Some(t), secret } => {
                assert_eq!(t.fingerprint(), tok.fingerprint());
                assert!(is_up_to_date(&c, &secret, &t, &data));
            }
            other => panic!("unexpected {other:?}"),
        }
        let mut tampered = secret.clone();
        tampered.data.as_mut().expect("data").insert(ACCESS_TOKEN_KEY.into(), ByteString(b"forged".to_vec()));
        assert!(matches!(inspect(&c, Some(tampered)), TargetState::Present { token: None, .. }));
        let mut edited = secret;
        edited.data.as_mut().expect("data").insert("client_id".into(), ByteString(b"other".to_vec()));
        assert!(!is_up_to_date(&c, &edited, &tok, &data));
    }

    #[test]
    fn foreign_secret_conflicts_unless_merge() {
        let foreign = Secret::default();
        assert!(matches!(inspect(&cred(CreationPolicy::Owner, &[]), Some(foreign.clone())), TargetState::Conflict));
        assert!(matches!(inspect(&cred(CreationPolicy::Orphan, &[]), Some(foreign.clone())), TargetState::Conflict));
        assert!(matches!(
            inspect(&cred(CreationPolicy::Merge, &[]), Some(foreign)),
            TargetState::Present { token: None, .. }
        ));
        assert!(matches!(inspect(&cred(CreationPolicy::Owner, &[]), None), TargetState::Missing));
    }

    #[test]
    fn a_cluster_credentials_copy_is_nobody_elses_target_even_to_merge() {
        let mut copy = Secret::default();
        copy.metadata.annotations = Some([(annotation::CLUSTER_CREDENTIAL.to_owned(), "firefly".to_owned())].into());
        for policy in [CreationPolicy::Owner, CreationPolicy::Orphan, CreationPolicy::Merge] {
            let state = inspect(&cred(policy, &[]), Some(copy.clone()));
            assert!(matches!(&state, TargetState::ClusterCopy(name) if name == "firefly"), "{policy:?}: {state:?}");
        }
    }

    #[test]
    fn templates_have_budgets() {
        for (source, budget) in [
            (r#"{{ "x" * 100000 }}"#, "longer than"),
            ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "steps"),
        ] {
            let c = cred(CreationPolicy::Owner, &[("big", source)]);
            let err = render_data(&c, &token(), &inputs()).unwrap_err();
            assert_eq!(err.reason(), "InvalidTemplate");
            assert!(err.to_string().contains(budget), "{err}");
        }
        let many: Vec<(String, String)> =
            (0..5).map(|i| (format!("k{i}"), r#"{{ "x" * 60000 }}"#.to_string())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let err = render_data(&cred(CreationPolicy::Owner, &many), &token(), &inputs()).unwrap_err();
        assert!(err.to_string().contains("over the limit"), "{err}");
    }

    #[test]
    fn merge_credentials_scope_their_annotations_and_keys() {
        let mut a = cred(CreationPolicy::Merge, &[]);
        let mut b = cred(CreationPolicy::Merge, &[]);
        b.metadata.name = Some("cloud-manager".into());
        for (c, prefix) in [(&mut a, "ff_"), (&mut b, "cm_")] {
            if let Some(t) = c.spec.target.as_mut() {
                t.key_prefix = Some(prefix.into());
                t.env_file_key = None;
                t.json_key = None;
            }
        }
        let tok = token();
        let mut shared = secret_with(&a, &render_data(&a, &tok, &inputs()).expect("a"), &tok);
        let b_data = render_data(&b, &tok, &inputs()).expect("b");
        let b_only = secret_with(&b, &b_data, &tok);
        shared
            .metadata
            .annotations
            .as_mut()
            .expect("a")
            .extend(b_only.metadata.annotations.clone().unwrap_or_default());
        shared.data.as_mut().expect("data").extend(b_only.data.clone().unwrap_or_default());
        assert!(shared.annotations().contains_key("credentials.adobe-operator.io/expires-at.firefly"));
        assert!(shared.annotations().contains_key("credentials.adobe-operator.io/expires-at.cloud-manager"));
        for c in [&a, &b] {
            match inspect(c, Some(shared.clone())) {
                TargetState::Present { token: Some(t), .. } => assert_eq!(t, tok),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(b_data.contains_key("cm_access_token") && !b_data.contains_key("access_token"));
    }

    #[test]
    fn merge_refuses_foreign_keys_and_typed_secrets() {
        let c = cred(CreationPolicy::Merge, &[]);
        let mut secret = Secret {
            data: Some(BTreeMap::from([("access_token".to_string(), ByteString(b"theirs".to_vec()))])),
            ..Default::default()
        };
        secret.metadata.managed_fields = Some(vec![
            serde_json::from_value(serde_json::json!({
                "manager": "kubectl-create", "operation": "Update", "apiVersion": "v1",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {".": {}, "f:access_token": {}}},
            }))
            .expect("managed fields"),
        ]);
        let keys = ["access_token".to_string(), "client_id".to_string()];
        assert_eq!(foreign_key(&c, &secret, &keys), Some(("access_token".into(), "kubectl-create".into())));
        secret.metadata.managed_fields = Some(vec![
            serde_json::from_value(serde_json::json!({
                "manager": field_manager(&c), "operation": "Apply", "apiVersion": "v1",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:access_token": {}}},
            }))
            .expect("managed fields"),
        ]);
        assert_eq!(foreign_key(&c, &secret, &keys), None, "our own key");
        let tls = Secret { type_: Some("kubernetes.io/tls".into()), ..Default::default() };
        assert!(matches!(inspect(&c, Some(tls)), TargetState::NotOpaque(t) if t == "kubernetes.io/tls"));
        let conflict = apply_conflict(
            "app",
            r#"Apply failed with 1 conflict: conflict with "kubectl-edit" using v1: .data.access_token"#,
        );
        assert_eq!(
            conflict.to_string(),
            Error::TargetKeyConflict { name: "app".into(), key: "access_token".into(), manager: "kubectl-edit".into() }
                .to_string()
        );
        assert!(field_manager(&c).len() <= 128);
        let legacy = r#"Apply failed with 2 conflicts: conflicts with "adobe-credential-operator" using v1:
- .data.access_token
- .data.client_id"#;
        assert!(only_legacy_conflicts(legacy));
        assert!(!only_legacy_conflicts(r#"conflicts with "adobe-credential-operator" and "kubectl-edit""#));
        assert!(!only_legacy_conflicts("no manager named"));
    }

    #[test]
    fn fingerprint_is_short_and_stable() {
        let f = SecretValue::new("abc").fingerprint();
        assert_eq!(f, "sha256:ba7816bf8f01cfea");
    }
}
