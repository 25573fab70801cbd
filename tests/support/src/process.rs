//! Running the server processes and making sure none outlives the test binary.
//!
//! The control plane lives in a `static`, which Rust never drops, and a test binary may also die
//! from a panic, a signal or a CI timeout. So cleanup cannot rely on destructors: a small reaper
//! process, in its own process group so Ctrl-C does not reach it, reads the pids to look after
//! from a pipe. The test process never closes that pipe; the kernel does when the test process
//! ends in any way, and the reaper then kills the servers and removes the temp directory.

use std::{
    fs::{self, OpenOptions},
    io::Write,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::Mutex,
    time::Duration,
};

use anyhow::{Context, Result, anyhow};
use rustix::process::{Pid, Signal, kill_process};

/// How long a server gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// `+pid` tracks a server, `-pid` forgets it. On EOF: SIGKILL the tracked servers (their data is
/// thrown away, so a graceful shutdown buys nothing and would slow the next test binary down),
/// wait until they are gone, then delete the directory given as `$1`.
const REAPER_SCRIPT: &str = r#"
declare -A pids=()
while read -r line; do
  case $line in
    +*) pids[${line#+}]=1 ;;
    -*) unset "pids[${line#-}]" ;;
  esac
done
[ ${#pids[@]} -gt 0 ] && kill -KILL "${!pids[@]}" 2>/dev/null
# A zombie counts as gone: it has exited and only init, its parent by now, can reap it.
running() {
  local stat
  stat=$(< "/proc/$1/stat") 2>/dev/null || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}
for _ in $(seq 50); do
  alive=
  for pid in "${!pids[@]}"; do running "$pid" && alive=1; done
  [ -z "$alive" ] && break
  sleep 0.1
done
rm -rf -- "$1"
"#;

/// The process that cleans up after the test binary, however it ends.
pub(crate) struct Reaper {
    pipe: Mutex<ChildStdin>,
    // Kept only so the handle is not dropped; the reaper is never waited for, it outlives us.
    _process: Child,
}

impl Reaper {
    /// Starts a reaper that will delete `dir` once the test binary has gone.
    pub fn spawn(dir: &Path) -> Result<Self> {
        let mut process = Command::new("bash")
            .args(["-c", REAPER_SCRIPT, "reaper"])
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("spawning the cleanup process (bash)")?;
        let pipe = process.stdin.take().context("reaper stdin")?;
        Ok(Self { pipe: Mutex::new(pipe), _process: process })
    }

    fn send(&self, line: &str) -> Result<()> {
        let mut pipe = self.pipe.lock().map_err(|_| anyhow!("reaper pipe poisoned"))?;
        writeln!(pipe, "{line}").context("writing to the cleanup process")
    }
}

/// How to (re)start one server.
pub(crate) struct ServerCommand {
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub log: PathBuf,
}

/// A running server whose output goes to a log file.
pub(crate) struct Server {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Server {
    /// Starts the server and hands its pid to the reaper. The log is appended to, so a restarted
    /// server's file keeps the earlier run.
    pub fn spawn(command: &ServerCommand, reaper: &Reaper) -> Result<Self> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&command.log)
            .with_context(|| format!("opening {}", command.log.display()))?;
        let child = Command::new(&command.program)
            .args(&command.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", command.program.display()))?;
        let server = Self { name: command.name, child, log: command.log.clone() };
        reaper.send(&format!("+{}", server.child.id()))?;
        Ok(server)
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The exit status if the server has exited on its own.
    pub fn exit_status(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]; returns once the process is gone.
    pub async fn stop(mut self, reaper: &Reaper) -> Result<()> {
        let pid = Pid::from_child(&self.child);
        if self.child.try_wait()?.is_none() {
            kill_process(pid, Signal::TERM)?;
            let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
            while self.child.try_wait()?.is_none() {
                if tokio::time::Instant::now() > deadline {
                    self.child.kill()?;
                    self.child.wait()?;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Only now that the process is reaped may its pid be reused, so forget it only now.
        reaper.send(&format!("-{pid}"))
    }

    /// Resident set size from `/proc/<pid>/status`.
    pub fn rss_bytes(&self) -> Result<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().strip_suffix("kB"))
            .ok_or_else(|| anyhow!("no VmRSS in /proc/{}/status", self.child.id()))?;
        Ok(kib.trim().parse::<u64>()? * 1024)
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(bytes) = fs::read(path) else {
        return format!("(no log at {})", path.display());
    };
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    format!("last {lines} lines of {}:\n{tail}", path.display())
}
