//! The procedure step by step against a scripted world: an Adobe that keeps secrets, checks the
//! secret of every mint and records its use, and can lose an add's answer; a namespace whose
//! state Secret writes can fail; a clock the test moves.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::crd::{ClientSecretRef, ClientSecretRotation};
use crate::rotation::Memory;
use crate::rotation::management::{Added, Listing};
use crate::rotation::persisted::Procedure;
use crate::rotation::world::SourceKeys;
use crate::token::MintedToken;

const CLIENT_ID: &str = "client-1";
const PRIMARY: &str = "client_secret";
const SECONDARY: &str = "client_secret_2";

fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

/// A secret Adobe keeps for the credential.
#[derive(Debug, Clone)]
struct AdobeSecret {
    uuid: String,
    value: String,
    created_at: Timestamp,
    last_used_at: Option<Timestamp>,
}

#[derive(Debug)]
struct Scripted {
    now: Timestamp,
    memory: Memory,
    /// The source Secret's client secrets, primary first.
    source: Vec<(String, String)>,
    stored: Option<Stored>,
    held: bool,
    adobe: Vec<AdobeSecret>,
    /// The client ID the management API's list names.
    listed_client_id: String,
    /// Values IMS does not accept yet (a new secret takes a while to reach every IMS node).
    not_accepted_yet: Vec<String>,
    /// The next add creates its secret but its answer is lost.
    lose_next_add_answer: bool,
    /// Saves of a new secret (step Verifying) that fail before one succeeds again.
    failing_verifying_saves: u32,
    /// Every call that reached Adobe or changed the namespace, in order.
    calls: Vec<String>,
    added: u32,
}

struct ScriptedWorld(Mutex<Scripted>);

impl ScriptedWorld {
    /// A credential with one secret at Adobe, created a year ago, in the source Secret.
    fn new() -> Self {
        let now = ts("2026-12-01T00:00:00Z");
        Self(Mutex::new(Scripted {
            now,
            memory: Memory::default(),
            source: vec![(PRIMARY.into(), "first-value".into())],
            stored: None,
            held: false,
            adobe: vec![AdobeSecret {
                uuid: "aaaa".into(),
                value: "first-value".into(),
                created_at: ts("2025-12-01T00:00:00Z"),
                last_used_at: None,
            }],
            listed_client_id: CLIENT_ID.into(),
            not_accepted_yet: vec![],
            lose_next_add_answer: false,
            failing_verifying_saves: 0,
            calls: vec![],
            added: 0,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Scripted> {
        self.0.lock().expect("not poisoned")
    }

    fn advance(&self, by: SignedDuration) {
        let mut s = self.lock();
        s.now = s.now.checked_add(by).expect("in range");
    }

    fn calls(&self, prefix: &str) -> usize {
        self.lock().calls.iter().filter(|c| c.starts_with(prefix)).count()
    }

    fn step(&self) -> &'static str {
        self.lock().stored.as_ref().map_or("none", |s| s.procedure.step.name())
    }

    fn uuids_at_adobe(&self) -> Vec<String> {
        self.lock().adobe.iter().map(|s| s.uuid.clone()).collect()
    }

    /// A token minted with what the source Secret holds now, as the token path would write it.
    fn token_from_source(&self) -> StoredToken {
        let s = self.lock();
        StoredToken {
            access_token: SecretValue::new("access"),
            token_type: "bearer".into(),
            issued_at: s.now,
            expires_at: s.now.checked_add(SignedDuration::from_hours(24)).expect("in range"),
            revision: revision(&s.source),
            client_secret_key: s.source.first().map(|(k, _)| k.clone()),
        }
    }

    /// Someone other than the operator mints with `value` now.
    fn used_elsewhere(&self, value: &str) {
        let mut s = self.lock();
        let now = s.now;
        s.adobe.iter_mut().filter(|a| a.value == value).for_each(|a| a.last_used_at = Some(now));
    }
}

fn revision(source: &[(String, String)]) -> String {
    source.iter().map(|(k, v)| format!("{k}={v};")).collect()
}

fn token(s: &Scripted, name: &str) -> MintedToken {
    MintedToken {
        access_token: SecretValue::new(name),
        token_type: "bearer".into(),
        issued_at: s.now,
        expires_at: s.now.checked_add(SignedDuration::from_hours(24)).expect("in range"),
        refresh_token: None,
        client_secret_key: "rotation".into(),
    }
}

fn unavailable() -> Error {
    Error::ManagementApiUnavailable { detail: "connection reset".into(), retry_after: None }
}

impl World for ScriptedWorld {
    fn now(&self) -> Timestamp {
        self.lock().now
    }

    fn remember<R>(&self, f: impl FnOnce(&mut Memory) -> R) -> R {
        f(&mut self.lock().memory)
    }

    async fn read_client(&self) -> Result<(OAuthClient, String)> {
        let s = self.lock();
        let secrets = s.source.iter().map(|(k, v)| (k.clone(), SecretValue::new(v.clone()))).collect();
        Ok((OAuthClient { client_id: CLIENT_ID.into(), secrets, notes: vec![] }, revision(&s.source)))
    }

    async fn check_source_writable(&self) -> Result<()> {
        Ok(())
    }

    async fn write_source(&self, keys: &SourceKeys, secret: &SecretValue) -> Result<()> {
        let mut s = self.lock();
        s.calls.push("write_source".into());
        let previous = s.source.first().map(|(_, v)| v.clone()).unwrap_or_default();
        s.source = vec![(keys.primary.clone(), secret.expose().to_owned()), (keys.secondary.clone(), previous)];
        Ok(())
    }

    async fn load(&self) -> Result<Option<Stored>> {
        Ok(self.lock().stored.clone())
    }

    async fn save(&self, procedure: &Procedure, new_secret: Option<&SecretValue>) -> Result<()> {
        let mut s = self.lock();
        if procedure.step.name() == "Verifying" && s.failing_verifying_saves > 0 {
            s.failing_verifying_saves -= 1;
            return Err(Error::kube("persisting the rotation state")(kube::Error::LinesCodecMaxLineLengthExceeded));
        }
        s.calls.push(format!("save:{}", procedure.step.name()));
        let new_secret = new_secret.filter(|_| procedure.step.holds_new_value()).cloned();
        s.stored = Some(Stored { procedure: procedure.clone(), new_secret });
        Ok(())
    }

    async fn hold(&self) -> Result<()> {
        let mut s = self.lock();
        s.calls.push("hold".into());
        s.held = true;
        Ok(())
    }

    async fn release(&self) -> Result<()> {
        let mut s = self.lock();
        s.calls.push("release".into());
        s.held = false;
        Ok(())
    }

    async fn mint(&self, client_id: &str, secret: &SecretValue, purpose: MintFor) -> Result<MintedToken> {
        let mut s = self.lock();
        s.calls.push(format!("mint:{}", purpose.as_str()));
        assert_eq!(client_id, CLIENT_ID);
        let now = s.now;
        let refused = || Error::InvalidClient { description: "invalid client_secret parameter".into(), debug_id: None };
        if s.not_accepted_yet.iter().any(|v| v == secret.expose()) {
            return Err(refused());
        }
        let Some(known) = s.adobe.iter_mut().find(|a| a.value == secret.expose()) else { return Err(refused()) };
        known.last_used_at = Some(now);
        Ok(token(&s, "management-token"))
    }

    async fn list(&self, _client_id: &str, token: &SecretValue) -> Result<Listing> {
        let mut s = self.lock();
        s.calls.push("list".into());
        assert_eq!(token.expose(), "management-token");
        let secrets = s
            .adobe
            .iter()
            .map(|a| Listed { uuid: a.uuid.clone(), created_at: a.created_at, last_used_at: a.last_used_at })
            .collect();
        Ok(Listing { client_id: s.listed_client_id.clone(), secrets })
    }

    async fn add(&self, _client_id: &str, _token: &SecretValue, _checked: &Checked) -> Result<Added> {
        let mut s = self.lock();
        s.added += 1;
        let (uuid, value) = (format!("new{}", s.added), format!("new-value-{}", s.added));
        s.calls.push(format!("add:{uuid}"));
        let created_at = s.now;
        s.adobe.push(AdobeSecret { uuid: uuid.clone(), value: value.clone(), created_at, last_used_at: None });
        if std::mem::take(&mut s.lose_next_add_answer) {
            return Err(unavailable());
        }
        Ok(Added { uuid, created_at, secret: SecretValue::new(value) })
    }

    async fn delete(&self, _client_id: &str, _token: &SecretValue, uuid: &str, _checked: &Checked) -> Result<bool> {
        let mut s = self.lock();
        s.calls.push(format!("delete:{uuid}"));
        let before = s.adobe.len();
        s.adobe.retain(|a| a.uuid != uuid);
        Ok(s.adobe.len() < before)
    }

    async fn pause(&self, _wait: Duration) {}

    fn ended(&self, outcome: &'static str) {
        self.lock().calls.push(format!("ended:{outcome}"));
    }
}

fn rotating(trigger: Option<&str>) -> Rotating {
    let settings = Settings::from_spec(&ClientSecretRotation {
        org_id: "1".into(),
        credential_id: "2".into(),
        every: None,
        grace_period: Some("1h".into()),
        management_endpoint: "https://api.adobe.io".into(),
        delete_other_secret: false,
    })
    .expect("valid");
    Rotating {
        settings,
        source: ClientSecretRef {
            name: "adobe-client".into(),
            client_id_key: "client_id".into(),
            client_secret_key: PRIMARY.into(),
            secondary_client_secret_key: Some(SECONDARY.into()),
        },
        state_secret: "c-rotation-state".into(),
        verify_timeout: Duration::from_secs(300),
        trigger: trigger.map(str::to_owned),
        deleting: false,
    }
}

/// The reason of the error a run stopped at.
fn failed(progress: &Progress) -> Option<&'static str> {
    match &progress.halt {
        Halt::Failed(err) => Some(err.reason()),
        _ => None,
    }
}

fn reasons(progress: &Progress) -> Vec<&'static str> {
    progress.notices.iter().map(|n| n.reason).collect()
}

fn run(future: impl std::future::Future<Output = Progress>) -> Progress {
    tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(future)
}

/// Asked to rotate: one run takes the rotation to the new secret in the source Secret.
fn rotated_to_the_source(world: &ScriptedWorld) -> Progress {
    let progress = run(advance(world, &rotating(Some("t1"))));
    assert!(matches!(progress.halt, Halt::AwaitingToken), "{:?}", progress.halt);
    progress
}

#[test]
fn the_first_look_identifies_the_secret_in_use_and_waits_for_a_trigger() {
    let world = ScriptedWorld::new();
    let progress = run(advance(&world, &rotating(None)));
    assert!(matches!(progress.halt, Halt::Wait(None)), "{:?}", progress.halt);
    let current = world.lock().stored.as_ref().and_then(|s| s.procedure.current.clone()).expect("identified");
    assert_eq!(current.uuid, "aaaa");
    assert_eq!(current.fingerprint, Some(SecretValue::new("first-value").fingerprint()));
    assert_eq!(world.lock().calls, ["mint:management_token", "list", "save:Idle"]);
    assert!(!world.lock().held, "nothing under way, nothing held");
}

#[test]
fn a_trigger_adds_verifies_and_writes_the_source_secret_then_waits_for_the_token() {
    let world = ScriptedWorld::new();
    let progress = rotated_to_the_source(&world);
    assert_eq!(reasons(&progress), ["RotationStarted", "ClientSecretAdded", "SourceSecretUpdated"]);
    // The first look identifies the secret in use; its management token serves the start too,
    // which holds the credential before anything changes at Adobe.
    assert_eq!(
        world.lock().calls,
        [
            "mint:management_token",
            "list",
            "save:Idle",
            "hold",
            "list",
            "save:Adding",
            "add:new1",
            "save:Verifying",
            "mint:verify",
            "write_source",
            "save:SwitchingSource"
        ]
    );
    assert_eq!(
        world.lock().source,
        [(PRIMARY.to_owned(), "new-value-1".to_owned()), (SECONDARY.to_owned(), "first-value".to_owned())]
    );
    let stored = world.lock().stored.clone().expect("stored");
    assert_eq!(stored.new_secret.as_ref().map(SecretValue::expose), Some("new-value-1"), "kept until the end");
}

#[test]
fn a_token_of_the_new_secret_switches_and_the_previous_secret_goes_after_the_grace_period() {
    let world = ScriptedWorld::new();
    let progress = rotated_to_the_source(&world);
    let stale = StoredToken { revision: "older inputs".into(), ..world.token_from_source() };
    let progress = run(after_token(&world, &rotating(Some("t1")), progress, &stale));
    assert!(matches!(progress.halt, Halt::AwaitingToken), "a token of the old secret does not switch");
    let switched_at = world.now();
    let progress = run(after_token(&world, &rotating(Some("t1")), progress, &world.token_from_source()));
    let grace_end = switched_at.checked_add(SignedDuration::from_hours(1)).expect("in range");
    assert!(matches!(progress.halt, Halt::Wait(Some(at)) if at == grace_end), "{:?}", progress.halt);
    assert_eq!(world.step(), "WaitingForGrace");
    assert_eq!(world.uuids_at_adobe(), ["aaaa", "new1"], "both kept through the grace period");

    world.advance(SignedDuration::from_mins(61));
    let progress = run(advance(&world, &rotating(Some("t1"))));
    assert!(matches!(progress.halt, Halt::Wait(None)), "{:?}", progress.halt);
    assert_eq!(reasons(&progress), ["RotationCompleted"]);
    assert_eq!(world.uuids_at_adobe(), ["new1"]);
    assert_eq!(world.step(), "Idle");
    assert_eq!(world.calls("ended:completed"), 1);
    assert_eq!(world.calls("add:"), 1);
}

#[test]
fn a_previous_secret_someone_else_still_uses_is_held() {
    let world = ScriptedWorld::new();
    let progress = rotated_to_the_source(&world);
    let progress = run(after_token(&world, &rotating(Some("t1")), progress, &world.token_from_source()));
    drop(progress);
    world.advance(SignedDuration::from_mins(30));
    world.used_elsewhere("first-value");
    world.advance(SignedDuration::from_mins(31));
    let progress = run(advance(&world, &rotating(Some("t1"))));
    let Halt::Held { held: Held::Previous, uuid, .. } = &progress.halt else { panic!("{:?}", progress.halt) };
    assert_eq!(uuid, "aaaa");
    assert_eq!(world.calls("delete:"), 0);
    assert_eq!(world.uuids_at_adobe(), ["aaaa", "new1"]);
}

#[test]
fn a_lost_add_answer_deletes_the_orphan_and_adds_again() {
    let world = ScriptedWorld::new();
    world.lock().lose_next_add_answer = true;
    let progress = run(advance(&world, &rotating(Some("t1"))));
    assert_eq!(failed(&progress), Some("ManagementApiUnavailable"));
    assert_eq!(world.step(), "Adding");
    assert_eq!(world.uuids_at_adobe(), ["aaaa", "new1"], "the add happened, its answer is lost");

    let progress = run(advance(&world, &rotating(Some("t1"))));
    assert!(matches!(progress.halt, Halt::AwaitingToken), "{:?}", progress.halt);
    assert_eq!(reasons(&progress)[0], "OrphanedSecretDeleted");
    assert_eq!(world.calls("delete:new1"), 1);
    assert_eq!(world.uuids_at_adobe(), ["aaaa", "new2"], "never a third secret");
    assert_eq!(world.lock().source[0].1, "new-value-2");
}

#[test]
fn a_new_secret_whose_saving_failed_is_saved_from_memory_and_not_added_again() {
    let world = ScriptedWorld::new();
    world.lock().failing_verifying_saves = 5;
    let progress = run(advance(&world, &rotating(Some("t1"))));
    assert_eq!(failed(&progress), Some("KubernetesApiError"));
    assert_eq!(world.step(), "Adding");
    assert!(world.remember(|m| m.unpersisted()).is_some(), "the value is kept in memory");

    let progress = run(advance(&world, &rotating(Some("t1"))));
    assert!(matches!(progress.halt, Halt::AwaitingToken), "{:?}", progress.halt);
    assert_eq!(world.calls("add:"), 1, "saved from memory, not added again");
    assert_eq!(world.calls("delete:"), 0);
    assert!(world.remember(|m| m.unpersisted()).is_none());
}

#[test]
fn a_list_of_another_clients_credential_changes_nothing() {
    let world = ScriptedWorld::new();
    world.lock().listed_client_id = "someone-else".into();
    let progress = run(advance(&world, &rotating(Some("t1"))));
    assert_eq!(failed(&progress), Some("CredentialMismatch"));
    assert_eq!((world.calls("add:"), world.calls("delete:")), (0, 0));
}

#[test]
fn a_new_secret_ims_never_accepts_is_abandoned_after_the_verification_window() {
    let world = ScriptedWorld::new();
    world.lock().not_accepted_yet = vec!["new-value-1".into()];
    let progress = run(advance(&world, &rotating(Some("t1"))));
    let Halt::VerifyPending(at) = progress.halt else { panic!("{:?}", progress.halt) };
    assert!(at > world.now());
    assert_eq!(world.lock().source[0].1, "first-value", "the source keeps the working secret");

    world.advance(SignedDuration::from_mins(6));
    let progress = run(advance(&world, &rotating(Some("t1"))));
    assert!(matches!(progress.halt, Halt::Wait(None)), "{:?}", progress.halt);
    assert_eq!(reasons(&progress), ["NewSecretDeleted"]);
    assert_eq!(world.uuids_at_adobe(), ["aaaa"]);
    assert_eq!(world.calls("ended:abandoned"), 1);
    let failure = world.lock().stored.as_ref().and_then(|s| s.procedure.last_failure.clone()).expect("remembered");
    assert_eq!(failure.reason, crate::rotation::persisted::VERIFICATION_FAILED);
}

#[test]
fn deleting_the_credential_while_verifying_deletes_the_new_secret_and_lets_go() {
    let world = ScriptedWorld::new();
    world.lock().not_accepted_yet = vec!["new-value-1".into()];
    run(advance(&world, &rotating(Some("t1"))));
    assert_eq!(world.step(), "Verifying");
    assert!(world.lock().held);

    let deleting = Rotating { deleting: true, ..rotating(Some("t1")) };
    let progress = run(advance(&world, &deleting));
    assert!(progress.released(&deleting), "{:?}", progress.halt);
    assert_eq!(world.uuids_at_adobe(), ["aaaa"]);
    assert!(!world.lock().held, "the finalizer is gone");
    assert_eq!(world.lock().source[0].1, "first-value");
}

#[test]
fn deleting_the_credential_after_a_lost_add_answer_deletes_the_orphan_and_adds_nothing() {
    let world = ScriptedWorld::new();
    world.lock().lose_next_add_answer = true;
    run(advance(&world, &rotating(Some("t1"))));
    assert_eq!(world.step(), "Adding");

    let deleting = Rotating { deleting: true, ..rotating(Some("t1")) };
    let progress = run(advance(&world, &deleting));
    assert!(progress.released(&deleting), "{:?}", progress.halt);
    assert_eq!(reasons(&progress), ["OrphanedSecretDeleted"]);
    assert_eq!(world.uuids_at_adobe(), ["aaaa"]);
    assert_eq!(world.calls("add:"), 1, "no add while being deleted");
    assert_eq!(world.step(), "Idle");
}

#[test]
fn another_secret_in_the_source_is_identified_again_and_said() {
    let world = ScriptedWorld::new();
    run(advance(&world, &rotating(None)));
    {
        // Someone adds a secret by hand and puts it into the source Secret.
        let mut s = world.lock();
        let created_at = s.now;
        s.adobe.push(AdobeSecret { uuid: "bbbb".into(), value: "by-hand".into(), created_at, last_used_at: None });
        s.source = vec![(PRIMARY.into(), "by-hand".into())];
    }
    world.advance(SignedDuration::from_mins(1));
    let progress = run(advance(&world, &rotating(None)));
    assert!(matches!(progress.halt, Halt::Wait(None)), "{:?}", progress.halt);
    assert_eq!(reasons(&progress), ["ClientSecretInUseChanged"]);
    let current = world.lock().stored.as_ref().and_then(|s| s.procedure.current.clone()).expect("identified");
    assert_eq!(current.uuid, "bbbb");
    assert_eq!((world.calls("add:"), world.calls("delete:")), (0, 0));
}
