//! The API server goes away mid-run (its own test binary: it disturbs the shared control plane).
//! A renewal that falls due during the outage happens once the API server is back (a token that
//! could not be written is not worth minting), watches resume, and nothing is minted twice.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestEnv, WAIT, key};
use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};

#[tokio::test]
async fn api_server_restart_loses_no_renewal_and_mints_nothing_twice() {
    let mut env = TestEnv::new("outage").await;
    let _alone = env.control_plane.exclusive().await;
    env.register_client("out-client", "p8e-out-secret", Duration::from_secs(8));
    env.put_source("out-src", "out-client", "p8e-out-secret").await;
    env.create(&env.s2s_credential("out", "out-src")).await;
    env.wait_ready("out", "True", "TokenMinted").await;

    // Every token that ever reaches the target, seen through a watch that resumes by itself.
    let written = Arc::new(Mutex::new(HashSet::new()));
    let sink = written.clone();
    let watch = tokio::spawn(
        watcher(env.secrets(), watcher::Config::default().fields("metadata.name=out-token"))
            .default_backoff()
            .applied_objects()
            .for_each(move |secret| {
                if let Some(token) = secret.ok().and_then(|s| key(&s, "access_token")) {
                    sink.lock().expect("lock").insert(token);
                }
                futures::future::ready(())
            }),
    );

    let before = env.ims.mint_count("out-client");
    let status = env.credentials().get("out").await.expect("get").status.expect("status");
    let renewal: jiff::Timestamp = status.renewal_time.expect("renewal time").0;
    // The outage spans the renewal time: from one second before to one second after it.
    sleep_until(renewal - jiff::SignedDuration::from_secs(1)).await;
    env.control_plane.stop_apiserver().await.expect("stop");
    sleep_until(renewal + jiff::SignedDuration::from_secs(1)).await;
    env.control_plane.start_apiserver().await.expect("start");

    env.ims.wait_for_mints("out-client", before + 1, WAIT).await.expect("the renewal happens after the outage");
    let renewed = env.ims.issued_tokens("out-client").pop().expect("token");
    common::eventually("the renewed token in the target", WAIT, || async {
        let target = env.target("out-token").await?;
        (key(&target, "access_token")? == renewed).then_some(())
    })
    .await;
    // The operator's watches resumed: a credential created now is served.
    env.create(&env.s2s_credential("after", "out-src")).await;
    env.wait_ready("after", "True", "TokenMinted").await;
    env.wait_ready("out", "True", "TokenMinted").await;
    common::eventually("the resumed watch to see the latest token", WAIT, || async {
        let latest = env.ims.issued_tokens("out-client");
        let seen = written.lock().expect("lock").clone();
        latest.iter().filter(|t| !seen.contains(*t)).count().le(&1).then_some(())
    })
    .await;
    watch.abort();
    let issued = env.ims.issued_tokens("out-client");
    let seen = written.lock().expect("lock").clone();
    // Each issued token reached a target (the "after" credential shares the client): none was
    // minted and thrown away.
    let target_after = env.target("after-token").await.and_then(|s| key(&s, "access_token"));
    let wasted: Vec<_> = issued.iter().filter(|t| !seen.contains(*t) && Some(*t) != target_after.as_ref()).collect();
    assert!(wasted.is_empty(), "{} token(s) minted but never written", wasted.len());
    assert!(env.operator.is_some());
    env.assert_no_mint_loop(&[]);
}

/// Waits (not an assertion: it places the fault) until the wall clock reaches `at`.
async fn sleep_until(at: jiff::Timestamp) {
    let wait = at.duration_since(jiff::Timestamp::now());
    if wait.is_positive() {
        tokio::time::sleep(wait.unsigned_abs()).await;
    }
}
