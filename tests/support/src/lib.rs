//! Integration-test harness: a real etcd + kube-apiserver (envtest-style, no mocks), shared by
//! all tests of one test binary.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let control_plane = test_support::control_plane();
//! let namespace = control_plane.namespace("renewal").await?;
//! let client = control_plane.client();
//! # let _ = (namespace, client);
//! # Ok(())
//! # }
//! ```
//!
//! The binaries come from `scripts/envtest-build.sh`; see [`bin_dir`]. Tests that stop or
//! restart the API server disturb every other test of their binary, so put them in a test file
//! of their own and hold [`ControlPlane::exclusive`].

mod apiserver;
mod binaries;
mod certificates;
mod control_plane;
mod crd;
mod etcd;
mod kubeconfig;
mod namespace;
mod process;
mod ready;
mod service_account;
mod tls;
mod wait;

use std::sync::OnceLock;

pub use binaries::{BIN_DIR_ENV, KUBERNETES_VERSION, bin_dir};
pub use control_plane::{ControlPlane, ControlPlaneMemory};
pub use namespace::TestNamespace;
pub use tls::LoopbackTls;
pub use wait::wait_for;

/// The control plane of this test binary, started on first use (blocking) and shared by all its
/// tests. Panics with the servers' log tails if it cannot start; later calls repeat that failure
/// instead of retrying.
pub fn control_plane() -> &'static ControlPlane {
    static CONTROL_PLANE: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
    let started = CONTROL_PLANE.get_or_init(|| {
        // A thread of its own: the caller is usually inside a test's Tokio runtime, which cannot
        // host another one, and the servers must not depend on any single test's runtime.
        let outcome = std::thread::spawn(ControlPlane::start)
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("control-plane startup panicked")));
        match outcome {
            Ok(control_plane) => {
                eprintln!(
                    "test-support: etcd + kube-apiserver v{KUBERNETES_VERSION} ready in {:.1?}",
                    control_plane.startup_duration()
                );
                Ok(control_plane)
            }
            Err(error) => Err(format!("{error:#}")),
        }
    });
    match started {
        Ok(control_plane) => control_plane,
        Err(error) => panic!("the test control plane failed to start: {error}"),
    }
}
