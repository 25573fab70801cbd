//! The servers must not outlive the test binary, even when it is killed outright (statics are
//! never dropped, so only the reaper process can clean up).

use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use test_support::{control_plane, wait_for};

const READY_LINE: &str = "control plane dir: ";

/// The child half of `servers_die_with_a_killed_test_binary`: starts a control plane, reports
/// where it lives, and waits to be killed.
#[test]
#[ignore = "run by servers_die_with_a_killed_test_binary"]
fn hold_a_control_plane_until_killed() {
    let dir =
        control_plane().kubeconfig_path().parent().expect("the kubeconfig lives in the control plane's directory");
    println!("{READY_LINE}{}", dir.display());
    loop {
        std::thread::park();
    }
}

#[tokio::test]
async fn servers_die_with_a_killed_test_binary() -> Result<()> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--ignored", "--exact", "hold_a_control_plane_until_killed", "--nocapture"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().context("child stdout")?;
    let dir = tokio::task::spawn_blocking(move || -> Result<PathBuf> {
        for line in BufReader::new(stdout).lines() {
            if let Some(dir) = line?.strip_prefix(READY_LINE) {
                return Ok(PathBuf::from(dir));
            }
        }
        anyhow::bail!("the child exited before its control plane was ready")
    })
    .await??;
    ensure!(!processes_mentioning(&dir)?.is_empty(), "no servers found for {}", dir.display());

    child.kill()?; // SIGKILL: no destructor, no atexit, nothing runs in the child.
    child.wait()?;

    wait_for("the servers to exit and their directory to be removed", Duration::from_secs(30), || async {
        processes_mentioning(&dir).is_ok_and(|pids| pids.is_empty()) && !dir.exists()
    })
    .await
}

/// Pids whose command line mentions `dir` (the servers get their data and cert paths there).
fn processes_mentioning(dir: &Path) -> Result<Vec<u32>> {
    let needle = dir.as_os_str().as_encoded_bytes();
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse().ok()) else {
            continue;
        };
        // Processes may vanish while we look; a missing cmdline just means not ours any more.
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline.windows(needle.len()).any(|window| window == needle) {
            pids.push(pid);
        }
    }
    Ok(pids)
}
