//! A stand-in for a fence agent (`fence_ipmilan`, `fence_redfish`) for two tandem members that
//! fence each other (`--fence-command`): a shell script that SIGKILLs the named peer's process
//! (powering it off), waits until it is gone and exits 0. It can be told to fail (exit 1) or to
//! hang, and it records every call. The members of one cluster share a unique
//! `--initial-cluster-token`, which the script matches with the peer's `--name` on the command
//! line, so that it never reaches a member of another test's cluster.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;

/// What the agent does when it is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// SIGKILL the peer, wait until it is gone, report success.
    Kill,
    /// Print an error and exit 1, as an agent that cannot reach the peer's BMC.
    Fail,
    /// Never return (the member must kill it after `--fence-timeout`).
    Hang,
}

impl Mode {
    fn word(self) -> &'static str {
        match self {
            Mode::Kill => "kill",
            Mode::Fail => "fail",
            Mode::Hang => "hang",
        }
    }
}

pub struct FenceAgent {
    dir: tempfile::TempDir,
    token: String,
}

impl FenceAgent {
    pub fn new() -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = tempfile::Builder::new().prefix("fence-agent-").tempdir()?;
        let token = format!(
            "fence-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let d = dir.path().display();
        let script = format!(
            r#"#!/bin/sh
mode=$(cat {d}/mode)
echo "$1 $mode" >> {d}/calls
case "$mode" in
  fail) echo "fence agent: cannot reach the BMC of $1" >&2; exit 1 ;;
  hang) echo "fence agent: waiting for the BMC of $1"; exec sleep 3600 ;;
esac
# A real agent takes a while to power a machine off.
[ -s {d}/seconds ] && sleep "$(cat {d}/seconds)"
pattern="--name=$1 .*--initial-cluster-token={token}( |\$)"
pkill -KILL -f -- "$pattern"
while pgrep -f -- "$pattern" >/dev/null; do sleep 0.05; done
echo "$1" >> {d}/off
echo "fence agent: $1 is off"
"#
        );
        let agent = dir.path().join("agent");
        std::fs::write(&agent, script)?;
        std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let a = FenceAgent { dir, token };
        a.set(Mode::Kill)?;
        Ok(a)
    }

    /// The flags every member of the cluster starts with: the shared token, the agent as the
    /// fence command (the peer's name as `$1`), the non-leader's extra delay and the command's
    /// timeout.
    pub fn flags(&self, delay_ms: u64, timeout_ms: u64) -> Vec<String> {
        vec![
            format!("--initial-cluster-token={}", self.token),
            format!("--fence-command={} \"$1\"", self.script().display()),
            format!("--fence-delay={delay_ms}"),
            format!("--fence-timeout={timeout_ms}"),
        ]
    }

    fn script(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    /// How long a successful fence takes (as an agent waiting on a BMC), before the kill.
    pub fn set_duration(&self, d: std::time::Duration) -> Result<()> {
        std::fs::write(
            self.dir.path().join("seconds"),
            format!("{:.3}", d.as_secs_f64()),
        )?;
        Ok(())
    }

    pub fn set(&self, mode: Mode) -> Result<()> {
        std::fs::write(self.dir.path().join("mode"), mode.word())?;
        Ok(())
    }

    /// Every call so far: the peer's name and what the agent was set to do.
    pub fn calls(&self) -> Vec<(String, Mode)> {
        let text = std::fs::read_to_string(self.dir.path().join("calls")).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(name, mode)| {
                let mode = match mode {
                    "fail" => Mode::Fail,
                    "hang" => Mode::Hang,
                    _ => Mode::Kill,
                };
                (name.to_string(), mode)
            })
            .collect()
    }

    /// The peers the agent powered off (successful calls, once their process is gone), in
    /// order.
    pub fn killed(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.dir.path().join("off")).unwrap_or_default();
        text.lines().map(str::to_string).collect()
    }
}

/// Waits until every member of `cluster` may fence (each heard its peer confirm the committed
/// two-voter membership since it started: `tandem_fence_armed 1` on its `/metrics`).
pub fn wait_armed(cluster: &crate::Cluster) -> Result<()> {
    for m in &cluster.members {
        let url = format!("{}/metrics", m.url());
        crate::wait_until(
            &format!("{} to arm its fencing", m.name()),
            crate::START_DEADLINE,
            || {
                crate::http_get(&url)
                    .is_ok_and(|(_, body)| body.lines().any(|l| l == "tandem_fence_armed 1"))
            },
        )?;
    }
    Ok(())
}
