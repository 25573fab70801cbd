//! Where the self-built control-plane binaries live.
//!
//! `scripts/envtest-build.sh` builds them from Go modules into a per-version cache; nothing is
//! downloaded at test time.

use std::{
    env,
    path::{Path, PathBuf},
};

use anyhow::{Result, bail};

/// The Kubernetes version the binaries are built at (and `/version` reports).
pub const KUBERNETES_VERSION: &str = "1.37.2";

/// Overrides the directory holding `etcd`, `kube-apiserver`, `kubectl` and `helm`.
pub const BIN_DIR_ENV: &str = "ENVTEST_BIN_DIR";

const REQUIRED: [&str; 2] = ["etcd", "kube-apiserver"];

/// The directory holding the control-plane binaries: `$ENVTEST_BIN_DIR`, else the build script's
/// cache `${XDG_CACHE_HOME:-$HOME/.cache}/adobe-credential-operator/envtest/<version>`.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = env::var_os(BIN_DIR_ENV).filter(|dir| !dir.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let cache = match (env::var_os("XDG_CACHE_HOME"), env::var_os("HOME")) {
        (Some(xdg), _) if !xdg.is_empty() => PathBuf::from(xdg),
        (_, Some(home)) => Path::new(&home).join(".cache"),
        _ => bail!("neither {BIN_DIR_ENV}, XDG_CACHE_HOME nor HOME is set"),
    };
    Ok(cache.join("adobe-credential-operator/envtest").join(KUBERNETES_VERSION))
}

/// Fails with the fix spelled out when a binary the control plane needs is missing.
pub(crate) fn check_present(dir: &Path) -> Result<()> {
    let missing: Vec<_> = REQUIRED.iter().filter(|name| !dir.join(name).is_file()).collect();
    if !missing.is_empty() {
        bail!(
            "control-plane binaries {missing:?} not found in {} (set {BIN_DIR_ENV} to override); \
             build them with `scripts/envtest-build.sh` (or `make test`)",
            dir.display()
        );
    }
    Ok(())
}
