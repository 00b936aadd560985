//! The operator's fence command (`--fence-command`): run through `sh -c` with the lost peer's
//! `--name` as `$1` and in `TANDEM_FENCE_PEER`, as Pacemaker-style agents expect
//! (`fence_ipmilan`, `fence_redfish`); exit status 0 means the peer is fenced. Its output goes
//! to the log. A command still running after the timeout is killed, with everything it
//! started (its own process group), and counts as failed. When to fence and what follows is
//! `raft::fence`.

use std::time::Duration;

use raft::types::MemberNode;

use crate::config::FenceConfig;

/// Runs the fence command for `peer`; whether it reported success.
pub async fn run(config: &FenceConfig, peer: &MemberNode) -> bool {
    let started = tokio::time::Instant::now();
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(&config.command)
        .arg("tandem-fence")
        .arg(&peer.name)
        .env("TANDEM_FENCE_PEER", &peer.name)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(peer = %peer.name, error = %e, "the fence command could not be started");
            return false;
        }
    };
    let group = child.id();
    match tokio::time::timeout(config.timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => {
            let ok = out.status.success();
            let (stdout, stderr) = (
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
            let took_ms = started.elapsed().as_millis() as u64;
            if ok {
                tracing::warn!(peer = %peer.name, took_ms, %stdout, %stderr, "the fence command reported the peer fenced");
            } else {
                tracing::error!(peer = %peer.name, took_ms, status = %out.status, %stdout, %stderr, "the fence command failed; the peer is not fenced and writes stay refused");
            }
            ok
        }
        Ok(Err(e)) => {
            tracing::error!(peer = %peer.name, error = %e, "waiting for the fence command failed");
            false
        }
        Err(_) => {
            if let Some(pid) = group.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            tracing::error!(peer = %peer.name, timeout_ms = config.timeout.as_millis() as u64, "the fence command hung and was killed; the peer is not fenced and writes stay refused");
            false
        }
    }
}

/// How long a member waits before it tries again after a failed fence.
pub fn retry_after(election_timeout_ms: u64) -> Duration {
    Duration::from_millis(election_timeout_ms.max(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(command: &str, timeout_ms: u64) -> FenceConfig {
        FenceConfig {
            command: command.into(),
            delay: Duration::ZERO,
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    fn peer() -> MemberNode {
        MemberNode {
            name: "node-b".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn the_peer_name_is_the_first_argument_and_in_the_environment() {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("out");
        let cmd = format!("echo \"$1 $TANDEM_FENCE_PEER\" > {}", out.display());
        assert!(run(&config(&cmd, 10_000), &peer()).await);
        assert_eq!(
            std::fs::read_to_string(&out).expect("written"),
            "node-b node-b\n"
        );
    }

    #[tokio::test]
    async fn a_failing_command_is_not_a_fence() {
        assert!(!run(&config("exit 3", 10_000), &peer()).await);
        assert!(!run(&config("/nonexistent-fence-agent \"$1\"", 10_000), &peer()).await);
    }

    #[tokio::test]
    async fn a_hanging_command_is_killed_with_its_children_and_fails() {
        let dir = tempfile::tempdir().expect("tmp");
        let pidfile = dir.path().join("pid");
        // The command's child outlives `sh` unless the whole group is killed.
        let cmd = format!("sleep 600 & echo $! > {}; wait", pidfile.display());
        assert!(!run(&config(&cmd, 500), &peer()).await);
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .expect("pid")
            .trim()
            .parse()
            .expect("a pid");
        let gone = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |s| s.split_whitespace().nth(2) == Some("Z"))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !gone() {
            assert!(
                std::time::Instant::now() < deadline,
                "the fence command's child {pid} still runs"
            );
            std::thread::yield_now();
        }
    }
}
