//! What the workload saw: every operation with its call and return times on one monotonic clock,
//! its request and its response or error, and every watch response. Written as JSON lines
//! (`history.jsonl`, one record per line) and kept when a check fails.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// A key-value pair as a response carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kv {
    pub key: String,
    pub value: String,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

/// A request the workload sends, in the shapes kube-apiserver uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// A put of a value written once in the whole run.
    Put {
        key: String,
        value: String,
        lease: i64,
    },
    /// A linearizable read of one key.
    Get {
        key: String,
    },
    /// A linearizable read of every key in `[start, end)`.
    Range {
        start: String,
        end: String,
    },
    Delete {
        key: String,
    },
    /// The apiserver's optimistic update: if the key's mod revision is `expect` (0: the key is
    /// absent) put `value`, else read the key.
    Txn {
        key: String,
        expect: i64,
        value: String,
    },
    LeaseGrant {
        ttl: i64,
    },
    LeaseRevoke {
        id: i64,
    },
    LeaseKeepAlive {
        id: i64,
    },
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A write or read answered at header revision `revision`.
    Put {
        revision: i64,
    },
    Read {
        revision: i64,
        kvs: Vec<Kv>,
    },
    Delete {
        revision: i64,
        deleted: i64,
    },
    Txn {
        revision: i64,
        succeeded: bool,
        kvs: Vec<Kv>,
    },
    LeaseGrant {
        revision: i64,
        id: i64,
        ttl: i64,
    },
    LeaseRevoke {
        revision: i64,
    },
    KeepAlive {
        ttl: i64,
    },
    /// An error: a write may or may not have happened (indeterminate).
    Failed {
        error: String,
    },
}

impl Outcome {
    pub fn failed(&self) -> bool {
        matches!(self, Outcome::Failed { .. })
    }
}

/// One operation of one client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub client: u32,
    /// Nanoseconds since the run started, when the request was sent and when it returned.
    pub call: u64,
    pub ret: u64,
    pub op: Op,
    pub outcome: Outcome,
}

/// One event of a watch response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub put: bool,
    pub kv: Kv,
    pub prev_kv: Option<Kv>,
}

/// One watch response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchResponse {
    pub received: u64,
    pub revision: i64,
    pub events: Vec<Event>,
    pub canceled: bool,
    pub compact_revision: i64,
}

/// One watch stream: what was asked and everything it delivered, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRecord {
    pub client: u32,
    pub start: String,
    pub end: String,
    pub start_revision: i64,
    pub responses: Vec<WatchResponse>,
    /// Set on a watcher's last stream when, after the run, it did not deliver every revision
    /// up to the final one (this) within the catch-up time.
    #[serde(default)]
    pub behind: Option<i64>,
}

/// One line of `history.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Line {
    Op(Record),
    Watch(WatchRecord),
}

/// The run's clock and everything recorded so far; cheap to clone, shared by every client.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    lines: Arc<Mutex<Vec<Line>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            lines: Arc::default(),
        }
    }

    /// Nanoseconds since the run started.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn op(&self, r: Record) {
        self.lines.lock().expect("recorder").push(Line::Op(r));
    }

    pub fn watch(&self, w: WatchRecord) {
        self.lines.lock().expect("recorder").push(Line::Watch(w));
    }

    pub fn lines(&self) -> Vec<Line> {
        self.lines.lock().expect("recorder").clone()
    }
}

/// Splits lines into operations and watch streams.
pub fn split(lines: &[Line]) -> (Vec<Record>, Vec<WatchRecord>) {
    let mut ops = Vec::new();
    let mut watches = Vec::new();
    for l in lines {
        match l {
            Line::Op(r) => ops.push(r.clone()),
            Line::Watch(w) => watches.push(w.clone()),
        }
    }
    (ops, watches)
}

pub fn write_jsonl(path: &Path, lines: &[Line]) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for l in lines {
        serde_json::to_writer(&mut f, l)?;
        f.write_all(b"\n")?;
    }
    f.flush()?;
    Ok(())
}

pub fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Line>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}
