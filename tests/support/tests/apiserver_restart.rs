//! Restarting the API server under a running watcher. In a test binary of its own because the
//! restart would break every concurrent test sharing the control plane.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use test_support::control_plane;

const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

fn config_map(name: &str) -> ConfigMap {
    ConfigMap { metadata: ObjectMeta { name: Some(name.to_owned()), ..ObjectMeta::default() }, ..ConfigMap::default() }
}

#[tokio::test]
async fn watcher_resumes_after_apiserver_restart() -> Result<()> {
    let control_plane = control_plane();
    let _exclusive = control_plane.exclusive().await;
    let namespace = control_plane.namespace("restart").await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(control_plane.client(), namespace.name());
    config_maps.create(&PostParams::default(), &config_map("before")).await?;

    // Errors during the outage are yielded and retried with backoff; only names matter here.
    let mut names = watcher(config_maps.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .filter_map(|object| async move { object.ok()?.metadata.name })
        .boxed();
    let mut next_name = async || {
        tokio::time::timeout(EVENT_TIMEOUT, names.next()).await.context("no watch event")?.context("watch ended")
    };
    ensure!(next_name().await? == "before");

    control_plane.stop_apiserver().await?;
    ensure!(
        control_plane.client().apiserver_version().await.is_err(),
        "the API server still answers after being stopped"
    );
    control_plane.start_apiserver().await?;

    // A fresh client: the point is the watcher's own reconnection, not this request's.
    let after_restart: Api<ConfigMap> = Api::namespaced(control_plane.client(), namespace.name());
    after_restart.create(&PostParams::default(), &config_map("after")).await?;
    ensure!(after_restart.get_opt("before").await?.is_some(), "etcd data lost");
    loop {
        // A relist after the restart may deliver "before" again.
        if next_name().await? == "after" {
            return Ok(());
        }
    }
}
