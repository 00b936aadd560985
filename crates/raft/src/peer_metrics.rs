//! etcd's peer network metrics, kept per process as etcd keeps them (its default Prometheus
//! registry): bytes sent to and received from each peer, messages that could not be sent, and
//! the round trip of each message to a peer (etcd measures it with probes on its streams; here
//! every AppendEntries, heartbeats included, is a probe). Peers are labelled by member id in
//! hex (`To`, `From`), as etcd labels them.

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use crate::types::NodeId;

pub type Labels = Vec<(String, String)>;

pub struct PeerMetrics {
    /// `etcd_network_peer_sent_bytes_total{To}`.
    pub sent_bytes: Family<Labels, Counter>,
    /// `etcd_network_peer_received_bytes_total{From}`.
    pub received_bytes: Family<Labels, Counter>,
    /// `etcd_network_peer_sent_failures_total{To}`.
    pub sent_failures: Family<Labels, Counter>,
    /// `etcd_network_peer_round_trip_time_seconds{To}`.
    pub round_trip: Family<Labels, Histogram>,
}

/// etcd's buckets for peer round trips: 0.1 ms to about 3.3 s, doubling.
fn round_trip_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

static PEERS: LazyLock<PeerMetrics> = LazyLock::new(|| PeerMetrics {
    sent_bytes: Family::default(),
    received_bytes: Family::default(),
    sent_failures: Family::default(),
    round_trip: Family::new_with_constructor(round_trip_histogram),
});

pub fn peers() -> &'static PeerMetrics {
    &PEERS
}

/// The label etcd gives a peer: `(name, member id in hex)`.
pub fn label(name: &str, peer: NodeId) -> Labels {
    vec![(name.to_string(), format!("{peer:x}"))]
}
