//! Automatic compaction (`--auto-compaction-mode/retention`), run by the leader through the log
//! like any client's compaction.
//!
//! - revision mode: every 5 minutes, compact to `current - retention`.
//! - periodic mode: sample the revision every `retention / 10` (at most hourly) and compact to
//!   the revision sampled `retention` ago, so about `retention` of history is kept.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use mvcc::Command;

use crate::config::AutoCompaction;
use crate::node::Node;

/// How often revision mode compacts (etcd: 5 minutes).
const REVISION_MODE_INTERVAL: Duration = Duration::from_secs(300);

pub async fn run(node: Arc<Node>) {
    let (interval, keep_samples) = match node.config.auto_compaction {
        AutoCompaction::Disabled => return,
        AutoCompaction::Revision(_) => (REVISION_MODE_INTERVAL, 0),
        AutoCompaction::Periodic(d) => (
            (d / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600)),
            10,
        ),
    };
    let mut samples: VecDeque<i64> = VecDeque::new();
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tick.tick().await;
        let current = node.store.current_revision();
        let target = match node.config.auto_compaction {
            AutoCompaction::Revision(keep) => current - keep,
            _ => {
                samples.push_back(current);
                if samples.len() <= keep_samples {
                    continue;
                }
                samples.pop_front().unwrap_or(0)
            }
        };
        if !node.status().is_leader || target <= node.store.compacted_revision() || target <= 0 {
            continue;
        }
        match node.propose(Command::Compact { revision: target }, 0).await {
            Ok(_) => tracing::info!(revision = target, "auto-compacted"),
            Err(e) => tracing::warn!(revision = target, error = %e, "auto-compaction failed"),
        }
    }
}
