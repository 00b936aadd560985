//! The node's configuration: etcd's flag names, defaults and `ETCD_*` environment variables, so
//! an etcd unit file or kubeadm manifest works unchanged. etcd flags tandem does not support yet
//! are recognised and refused with a clear message, never ignored.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use replication::MemberNode;
use sha2::{Digest, Sha256};

/// The etcd version tandem reports by default in `Status.version` and `/version`: an etcd
/// 3.6-style semver, because kube-apiserver gates features on it.
pub const DEFAULT_SERVER_VERSION: &str = "3.6.5";
/// The etcd cluster version reported alongside it.
pub const DEFAULT_CLUSTER_VERSION: &str = "3.6.0";

#[derive(Parser, Debug, Clone)]
#[command(
    name = "tandem",
    version,
    about = "An etcd v3-compatible replicated key-value store (two nodes + witness).",
    long_about = None,
    // Go's flag package takes a flag given twice, the last value winning; so does tandem.
    args_override_self = true
)]
pub struct Flags {
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,
    /// Path to the data directory (default: "<name>.etcd").
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// List of URLs to listen on for client traffic (gRPC and HTTP).
    #[arg(
        long,
        env = "ETCD_LISTEN_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    pub listen_client_urls: String,
    /// List of this member's client URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "ETCD_ADVERTISE_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    pub advertise_client_urls: String,
    /// List of URLs to listen on for peer traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub listen_peer_urls: String,
    /// List of this member's peer URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping ("name=peerURL,...").
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// The member of --initial-cluster that is the witness: a voter with no key-value data and
    /// no client API (tandem's flag; the same on every member).
    #[arg(long, env = "TANDEM_INITIAL_CLUSTER_WITNESS")]
    pub initial_cluster_witness: Option<String>,
    /// On the witness: the most entry payload bytes it holds for a data node that is behind
    /// (W4); past it no more writes commit until a data node catches up (0 = the
    /// --quota-backend-bytes value). Other members ignore it.
    #[arg(long, env = "TANDEM_WITNESS_MAX_PAYLOAD_BYTES", default_value_t = 0)]
    pub witness_max_payload_bytes: u64,
    /// Two data members and no witness: the command that fences (powers off) a lost peer before
    /// this member continues alone, run with `sh -c`, the peer's --name as `$1` and in
    /// TANDEM_FENCE_PEER; exit status 0 means fenced (tandem's flag).
    #[arg(long, env = "TANDEM_FENCE_COMMAND")]
    pub fence_command: Option<String>,
    /// With --fence-command: how much longer (ms) the member that did not lead waits before
    /// fencing, so that the leader's fence lands first (Pacemaker's pcmk_delay_base).
    #[arg(long, env = "TANDEM_FENCE_DELAY", default_value_t = 5000)]
    pub fence_delay: u64,
    /// With --fence-command: how long (ms) the command may run before it is killed and counted
    /// as failed (then tried again).
    #[arg(long, env = "TANDEM_FENCE_TIMEOUT", default_value_t = 60_000)]
    pub fence_timeout: u64,
    /// Initial cluster state ("new" or "existing").
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new")]
    pub initial_cluster_state: String,
    /// Initial cluster token for the cluster during bootstrap.
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    pub initial_cluster_token: String,
    /// Raise an alarm when the backend size exceeds this many bytes (0 = the default, 2 GiB).
    #[arg(long, env = "ETCD_QUOTA_BACKEND_BYTES", default_value_t = 0)]
    pub quota_backend_bytes: i64,
    /// Memory for the keyspace's page cache, in bytes: more makes reads of a keyspace larger
    /// than it cheaper, at that much more resident memory (tandem's flag; etcd maps its whole
    /// backend file instead; docs/decisions/0014-keyspace-page-cache.md).
    #[arg(long, env = "TANDEM_BACKEND_CACHE_BYTES", default_value_t = mvcc::DEFAULT_CACHE_BYTES)]
    pub backend_cache_bytes: usize,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    pub max_request_bytes: u32,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: usize,
    /// Specify auth token specific options ("simple").
    #[arg(long, env = "ETCD_AUTH_TOKEN", default_value = "simple")]
    pub auth_token: String,
    /// The lifetime in seconds of the auth token.
    #[arg(long, env = "ETCD_AUTH_TOKEN_TTL", default_value_t = 300)]
    pub auth_token_ttl: u64,
    /// Specify bcrypt algorithm cost factor for auth password hashing.
    #[arg(long, env = "ETCD_BCRYPT_COST", default_value_t = 10)]
    pub bcrypt_cost: u32,
    /// Auto compaction mode: "periodic" or "revision".
    #[arg(long, env = "ETCD_AUTO_COMPACTION_MODE", default_value = "periodic")]
    pub auto_compaction_mode: String,
    /// Auto compaction retention: a duration ("1h", or hours as a number) for periodic mode, a
    /// revision count for revision mode; 0 disables auto compaction.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_RETENTION", default_value = "0")]
    pub auto_compaction_retention: String,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,
    /// Number of committed entries between two snapshots.
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    pub snapshot_count: u64,
    /// Number of entries kept after a snapshot for a slow follower to catch up from (beyond
    /// them, it is sent the snapshot).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES",
        default_value_t = 5_000
    )]
    pub experimental_snapshot_catchup_entries: u64,
    /// Duration of periodic watch progress notifications.
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
        alias = "watch-progress-notify-interval",
        default_value = "10m"
    )]
    pub experimental_watch_progress_notify_interval: String,
    /// Compare this member's HashKV with its peers' before serving; refuse to start on a
    /// difference.
    #[arg(long, env = "ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK", num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub experimental_initial_corrupt_check: String,
    /// How often the leader compares HashKV with its followers (0: never); a follower that
    /// differs gets the CORRUPT alarm.
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME",
        default_value = "0s"
    )]
    pub experimental_corrupt_check_time: String,
    /// Log level: debug, info, warn, error, panic or fatal.
    #[arg(long, env = "ETCD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Logger: only "zap" (structured) is accepted, as in etcd 3.5+.
    #[arg(long, env = "ETCD_LOGGER", default_value = "zap")]
    pub logger: String,
    /// Where logs go: "default", "stderr" or "stdout".
    #[arg(long, env = "ETCD_LOG_OUTPUTS", default_value = "default")]
    pub log_outputs: String,
    /// Additional URLs to serve /metrics and /health on.
    #[arg(long, env = "ETCD_LISTEN_METRICS_URLS")]
    pub listen_metrics_urls: Option<String>,
    /// The etcd version reported to clients (Status.version, /version); tandem's own version
    /// is reported separately.
    #[arg(long, env = "TANDEM_SERVER_VERSION", default_value = DEFAULT_SERVER_VERSION)]
    pub server_version: String,

    #[command(flatten)]
    pub tls: TlsFlags,

    #[command(flatten)]
    pub unsupported: Unsupported,

    #[command(flatten)]
    pub inert: Inert,

    /// Frequency duration of server-to-client ping to check if a connection is alive.
    #[arg(long, env = "ETCD_GRPC_KEEPALIVE_INTERVAL", default_value = "2h")]
    pub grpc_keepalive_interval: String,
    /// Additional duration of wait before closing a non-responsive connection.
    #[arg(long, env = "ETCD_GRPC_KEEPALIVE_TIMEOUT", default_value = "20s")]
    pub grpc_keepalive_timeout: String,
    /// Maximum concurrent streams that each client can open at a time.
    #[arg(long, env = "ETCD_MAX_CONCURRENT_STREAMS", default_value_t = u32::MAX)]
    pub max_concurrent_streams: u32,
    /// Set level of detail for exported metrics, specify 'extensive' to include server side
    /// grpc histogram metrics.
    #[arg(long, env = "ETCD_METRICS", default_value = "basic")]
    pub metrics: String,
}

/// etcd's TLS flags (client side, peer side, and what both share).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsFlags {
    /// Path to the client server TLS cert file.
    #[arg(long, env = "ETCD_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// Path to the client server TLS key file.
    #[arg(long, env = "ETCD_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Path to the client server TLS trusted CA cert file.
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Enable client cert authentication.
    #[arg(long, env = "ETCD_CLIENT_CERT_AUTH", num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub client_cert_auth: String,
    /// Path to the client certificate revocation list file.
    #[arg(long, env = "ETCD_CLIENT_CRL_FILE")]
    pub client_crl_file: Option<PathBuf>,
    /// Allowed TLS hostname for client cert authentication.
    #[arg(long, env = "ETCD_CLIENT_CERT_ALLOWED_HOSTNAME", default_value = "")]
    pub client_cert_allowed_hostname: String,
    /// Client TLS using generated certificates.
    #[arg(long, env = "ETCD_AUTO_TLS", num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub auto_tls: String,
    /// Path to the peer server TLS cert file.
    #[arg(long, env = "ETCD_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,
    /// Path to the peer server TLS key file.
    #[arg(long, env = "ETCD_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// Path to the peer server TLS trusted CA file.
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Enable peer client cert authentication.
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_AUTH", num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub peer_client_cert_auth: String,
    /// Path to the peer certificate revocation list file.
    #[arg(long, env = "ETCD_PEER_CRL_FILE")]
    pub peer_crl_file: Option<PathBuf>,
    /// Allowed CN for inter peer authentication.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_CN", default_value = "")]
    pub peer_cert_allowed_cn: String,
    /// Allowed TLS hostname for inter peer authentication.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_HOSTNAME", default_value = "")]
    pub peer_cert_allowed_hostname: String,
    /// Skip verification of SAN field in client certificate for peer connections.
    #[arg(long, env = "ETCD_EXPERIMENTAL_PEER_SKIP_CLIENT_SAN_VERIFICATION", num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub experimental_peer_skip_client_san_verification: String,
    /// Peer TLS using generated certificates.
    #[arg(long, env = "ETCD_PEER_AUTO_TLS", num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub peer_auto_tls: String,
    /// The validity period of the client and peer certificates generated by --auto-tls and
    /// --peer-auto-tls, in years.
    #[arg(long, env = "ETCD_SELF_SIGNED_CERT_VALIDITY", default_value_t = 1)]
    pub self_signed_cert_validity: u32,
    /// Comma-separated list of supported TLS cipher suites between client/server and peers
    /// (empty will be auto-populated by rustls).
    #[arg(long, env = "ETCD_CIPHER_SUITES", default_value = "")]
    pub cipher_suites: String,
    /// Minimum TLS version supported: TLS1.2 or TLS1.3.
    #[arg(long, env = "ETCD_TLS_MIN_VERSION", default_value = "TLS1.2")]
    pub tls_min_version: String,
    /// Maximum TLS version supported: TLS1.2 or TLS1.3 (empty: the highest).
    #[arg(long, env = "ETCD_TLS_MAX_VERSION", default_value = "")]
    pub tls_max_version: String,
}

/// A boolean flag's value as Go's `strconv.ParseBool` reads it.
fn go_bool(flag: &str, value: &str) -> anyhow::Result<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        v => bail!("invalid boolean value {v:?} for -{flag}: parse error"),
    }
}

/// This member's TLS, as the flags describe it: the client side, the peer side, and what both
/// share. A side with `auto` makes its self-signed certificate when the member starts
/// ([`Tls::materialize`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    pub client: tls::Settings,
    pub peer: tls::Settings,
    pub policy: tls::Policy,
    pub client_auto: bool,
    pub peer_auto: bool,
    pub self_signed_validity_years: u32,
}

impl Tls {
    fn from_flags(f: &TlsFlags) -> anyhow::Result<Self> {
        let suites: Vec<String> = f
            .cipher_suites
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let policy = tls::Policy::new(&f.tls_min_version, &f.tls_max_version, suites)?;
        let client = tls::Settings {
            cert_file: f.cert_file.clone(),
            key_file: f.key_file.clone(),
            trusted_ca_file: f.trusted_ca_file.clone(),
            client_cert_auth: go_bool("client-cert-auth", &f.client_cert_auth)?,
            crl_file: f.client_crl_file.clone(),
            allowed_cn: None,
            allowed_hostname: Some(f.client_cert_allowed_hostname.clone())
                .filter(|h| !h.is_empty()),
            check_client_san: false,
            self_signed: false,
        };
        let peer = tls::Settings {
            cert_file: f.peer_cert_file.clone(),
            key_file: f.peer_key_file.clone(),
            trusted_ca_file: f.peer_trusted_ca_file.clone(),
            client_cert_auth: go_bool("peer-client-cert-auth", &f.peer_client_cert_auth)?,
            crl_file: f.peer_crl_file.clone(),
            allowed_cn: Some(f.peer_cert_allowed_cn.clone()).filter(|c| !c.is_empty()),
            allowed_hostname: Some(f.peer_cert_allowed_hostname.clone()).filter(|h| !h.is_empty()),
            check_client_san: !go_bool(
                "experimental-peer-skip-client-san-verification",
                &f.experimental_peer_skip_client_san_verification,
            )?,
            self_signed: false,
        };
        let client_auto = go_bool("auto-tls", &f.auto_tls)?;
        let peer_auto = go_bool("peer-auto-tls", &f.peer_auto_tls)?;
        if client_auto && !client.is_empty() {
            tracing::warn!("ignoring client auto TLS since certs given");
        }
        if peer_auto && !peer.is_empty() {
            tracing::warn!("ignoring peer auto TLS since certs given");
        }
        Ok(Tls {
            client_auto: client_auto && client.is_empty(),
            peer_auto: peer_auto && peer.is_empty(),
            client,
            peer,
            policy,
            self_signed_validity_years: f.self_signed_cert_validity,
        })
    }

    /// Makes the self-signed certificates of `--auto-tls` and `--peer-auto-tls` (kept in
    /// `<data-dir>/fixtures/{client,peer}`, as etcd keeps them) for the hosts of the listen URLs.
    pub fn materialize(
        &mut self,
        data_dir: &std::path::Path,
        client_urls: &[String],
        peer_urls: &[String],
    ) -> anyhow::Result<()> {
        let hosts = |urls: &[String]| -> Vec<String> {
            urls.iter()
                .filter_map(|u| u.split_once("://").map(|(_, rest)| rest))
                .map(|hp| hp.trim_end_matches('/'))
                .map(|hp| hp.rsplit_once(':').map_or(hp, |(h, _)| h).to_string())
                .collect()
        };
        let years = self.self_signed_validity_years;
        if self.client_auto {
            let (cert, key) = tls::self_signed(
                &data_dir.join("fixtures/client"),
                &hosts(client_urls),
                years,
            )?;
            self.client.cert_file = Some(cert);
            self.client.key_file = Some(key);
            self.client.self_signed = true;
        }
        if self.peer_auto {
            let (cert, key) =
                tls::self_signed(&data_dir.join("fixtures/peer"), &hosts(peer_urls), years)?;
            self.peer.cert_file = Some(cert);
            self.peer.key_file = Some(key);
            self.peer.self_signed = true;
        }
        Ok(())
    }
}

macro_rules! unsupported_flags {
    ($($field:ident = $flag:literal, $env:literal;)*) => {
        /// etcd flags tandem recognises but does not implement yet.
        #[derive(clap::Args, Debug, Clone, Default)]
        pub struct Unsupported {
            $(
                #[arg(long = $flag, env = $env, hide = true, num_args = 0..=1, default_missing_value = "true")]
                pub $field: Option<String>,
            )*
        }

        impl Unsupported {
            /// The first unsupported flag that was given.
            pub fn first_given(&self) -> Option<(&'static str, &'static str)> {
                $(if self.$field.is_some() { return Some(($flag, $env)); })*
                None
            }
        }
    };
}

unsupported_flags! {
    discovery = "discovery", "ETCD_DISCOVERY";
    discovery_srv = "discovery-srv", "ETCD_DISCOVERY_SRV";
    enable_v2 = "enable-v2", "ETCD_ENABLE_V2";
    listen_client_http_urls = "listen-client-http-urls", "ETCD_LISTEN_CLIENT_HTTP_URLS";
    force_new_cluster = "force-new-cluster", "ETCD_FORCE_NEW_CLUSTER";
    wal_dir = "wal-dir", "ETCD_WAL_DIR";
    enable_pprof = "enable-pprof", "ETCD_ENABLE_PPROF";
    discovery_fallback = "discovery-fallback", "ETCD_DISCOVERY_FALLBACK";
    discovery_proxy = "discovery-proxy", "ETCD_DISCOVERY_PROXY";
    discovery_srv_name = "discovery-srv-name", "ETCD_DISCOVERY_SRV_NAME";
    proxy = "proxy", "ETCD_PROXY";
    proxy_dial_timeout = "proxy-dial-timeout", "ETCD_PROXY_DIAL_TIMEOUT";
    proxy_failure_wait = "proxy-failure-wait", "ETCD_PROXY_FAILURE_WAIT";
    proxy_read_timeout = "proxy-read-timeout", "ETCD_PROXY_READ_TIMEOUT";
    proxy_refresh_interval = "proxy-refresh-interval", "ETCD_PROXY_REFRESH_INTERVAL";
    proxy_write_timeout = "proxy-write-timeout", "ETCD_PROXY_WRITE_TIMEOUT";
    cors = "cors", "ETCD_CORS";
    host_whitelist = "host-whitelist", "ETCD_HOST_WHITELIST";
    experimental_enable_v2v3 = "experimental-enable-v2v3", "ETCD_EXPERIMENTAL_ENABLE_V2V3";
    v2_deprecation = "v2-deprecation", "ETCD_V2_DEPRECATION";
    experimental_enable_distributed_tracing = "experimental-enable-distributed-tracing", "ETCD_EXPERIMENTAL_ENABLE_DISTRIBUTED_TRACING";
    experimental_distributed_tracing_address = "experimental-distributed-tracing-address", "ETCD_EXPERIMENTAL_DISTRIBUTED_TRACING_ADDRESS";
    experimental_distributed_tracing_service_name = "experimental-distributed-tracing-service-name", "ETCD_EXPERIMENTAL_DISTRIBUTED_TRACING_SERVICE_NAME";
    experimental_distributed_tracing_instance_id = "experimental-distributed-tracing-instance-id", "ETCD_EXPERIMENTAL_DISTRIBUTED_TRACING_INSTANCE_ID";
    // tandem never acknowledges a write before its log entry is on disk.
    unsafe_no_fsync = "unsafe-no-fsync", "ETCD_UNSAFE_NO_FSYNC";
}

macro_rules! inert_flags {
    ($($field:ident = $flag:literal, $env:literal, $why:literal;)*) => {
        /// etcd flags that tune what tandem does not have (bbolt, Go's runtime, etcd's own
        /// raft): accepted, so that etcd's unit files and manifests start tandem unchanged, and
        /// logged at start as having no effect, with the reason.
        #[derive(clap::Args, Debug, Clone, Default)]
        pub struct Inert {
            $(
                #[arg(long = $flag, env = $env, hide = true, num_args = 0..=1, default_missing_value = "true")]
                pub $field: Option<String>,
            )*
        }

        impl Inert {
            /// Each inert flag that was given: flag, value, why it has no effect.
            pub fn given(&self) -> Vec<(&'static str, String, &'static str)> {
                let mut out = Vec::new();
                $(if let Some(v) = &self.$field { out.push(($flag, v.clone(), $why)); })*
                out
            }
        }
    };
}

inert_flags! {
    backend_batch_interval = "backend-batch-interval", "ETCD_BACKEND_BATCH_INTERVAL", "tandem commits each applied batch of the log at once (bbolt tuning)";
    backend_batch_limit = "backend-batch-limit", "ETCD_BACKEND_BATCH_LIMIT", "tandem commits each applied batch of the log at once (bbolt tuning)";
    backend_bbolt_freelist_type = "backend-bbolt-freelist-type", "ETCD_BACKEND_BBOLT_FREELIST_TYPE", "the keyspace is in redb, not bbolt";
    experimental_bootstrap_defrag_threshold_megabytes = "experimental-bootstrap-defrag-threshold-megabytes", "ETCD_EXPERIMENTAL_BOOTSTRAP_DEFRAG_THRESHOLD_MEGABYTES", "the keyspace is in redb, not bbolt";
    experimental_compaction_batch_limit = "experimental-compaction-batch-limit", "ETCD_EXPERIMENTAL_COMPACTION_BATCH_LIMIT", "a compaction is applied in one commit";
    experimental_txn_mode_write_with_shared_buffer = "experimental-txn-mode-write-with-shared-buffer", "ETCD_EXPERIMENTAL_TXN_MODE_WRITE_WITH_SHARED_BUFFER", "bbolt read buffer tuning";
    experimental_warning_apply_duration = "experimental-warning-apply-duration", "ETCD_EXPERIMENTAL_WARNING_APPLY_DURATION", "tandem does not log slow applies";
    experimental_enable_lease_checkpoint = "experimental-enable-lease-checkpoint", "ETCD_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT", "a new leader times every lease afresh, as etcd without checkpoints";
    max_snapshots = "max-snapshots", "ETCD_MAX_SNAPSHOTS", "tandem keeps one snapshot of its state machine";
    max_wals = "max-wals", "ETCD_MAX_WALS", "tandem removes log segments once a snapshot covers them";
    socket_reuse_address = "socket-reuse-address", "ETCD_SOCKET_REUSE_ADDRESS", "listeners use the system's defaults";
    socket_reuse_port = "socket-reuse-port", "ETCD_SOCKET_REUSE_PORT", "listeners use the system's defaults";
    initial_election_tick_advance = "initial-election-tick-advance", "ETCD_INITIAL_ELECTION_TICK_ADVANCE", "openraft times elections itself";
    pre_vote = "pre-vote", "ETCD_PRE_VOTE", "openraft's leader lease keeps a returning member from deposing a leader; beside a witness tandem always pre-votes";
    strict_reconfig_check = "strict-reconfig-check", "ETCD_STRICT_RECONFIG_CHECK", "membership changes are always checked strictly";
    enable_log_rotation = "enable-log-rotation", "ETCD_ENABLE_LOG_ROTATION", "tandem does not rotate its log files";
    log_rotation_config_json = "log-rotation-config-json", "ETCD_LOG_ROTATION_CONFIG_JSON", "tandem does not rotate its log files";
    grpc_keepalive_min_time = "grpc-keepalive-min-time", "ETCD_GRPC_KEEPALIVE_MIN_TIME", "tandem's HTTP/2 server limits client pings by its own rules";
    experimental_backend_bbolt_freelist_type = "experimental-backend-bbolt-freelist-type", "ETCD_EXPERIMENTAL_BACKEND_BBOLT_FREELIST_TYPE", "the keyspace is in redb, not bbolt";
    debug = "debug", "ETCD_DEBUG", "etcd 3.4's debug switch; --log-level=debug sets tandem's level";
    log_package_levels = "log-package-levels", "ETCD_LOG_PACKAGE_LEVELS", "etcd 3.4's per-package levels (capnslog); --log-level sets tandem's";
}

/// Automatic compaction as etcd's `--auto-compaction-*` flags describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    Disabled,
    /// Keep roughly this much history (by time).
    Periodic(Duration),
    /// Keep this many revisions.
    Revision(i64),
}

/// The resolved configuration the node runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    pub data_dir: PathBuf,
    pub client_urls: Vec<String>,
    pub advertise_client_urls: Vec<String>,
    pub peer_urls: Vec<String>,
    pub advertise_peer_urls: Vec<String>,
    pub member_id: u64,
    pub cluster_id: u64,
    pub initial_members: BTreeMap<u64, MemberNode>,
    /// This member is the witness (`--initial-cluster-witness` names it).
    pub is_witness: bool,
    /// The incarnation of the data dir (`identity::settle` sets it).
    pub incarnation: u64,
    /// This member as it describes itself to the others (with its client URLs).
    pub self_node: MemberNode,
    pub bootstrap: bool,
    pub quota_backend_bytes: i64,
    /// The keyspace's page cache (`--backend-cache-bytes`).
    pub backend_cache_bytes: usize,
    /// The witness's payload cap (W4).
    pub witness_max_payload_bytes: u64,
    pub max_request_bytes: u32,
    pub max_txn_ops: usize,
    /// `--auth-token` as given (checked: `authn::TokenOptions::parse`).
    pub auth_token: String,
    /// Flags given that have no effect in tandem, each with the reason (logged at start).
    pub inert_flags: Vec<String>,
    /// `--grpc-keepalive-interval` and `--grpc-keepalive-timeout` (zero interval: no pings).
    pub grpc_keepalive: (Duration, Duration),
    /// `--max-concurrent-streams`: HTTP/2 streams one client connection may have open.
    pub max_concurrent_streams: u32,
    /// `--metrics=extensive`: per-method gRPC latency histograms too.
    pub extensive_metrics: bool,
    /// How long a token lives unused, in seconds (`--auth-token-ttl`).
    pub auth_token_ttl_secs: u64,
    /// `--bcrypt-cost`, within bcrypt's bounds.
    pub bcrypt_cost: u32,
    pub auto_compaction: AutoCompaction,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    pub snapshot_count: u64,
    pub snapshot_catchup_entries: u64,
    pub progress_notify_interval: Duration,
    pub initial_corrupt_check: bool,
    /// Zero: no periodic corruption check.
    pub corrupt_check_interval: Duration,
    pub server_version: String,
    pub metrics_urls: Vec<String>,
    /// `--fence-command` (`crate::fence`).
    pub fence: Option<FenceConfig>,
    pub tls: Tls,
}

/// How this member fences its lost peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceConfig {
    pub command: String,
    pub delay: Duration,
    pub timeout: Duration,
}

/// etcd's default backend quota.
pub const DEFAULT_QUOTA_BYTES: i64 = 2 * 1024 * 1024 * 1024;

fn split_urls(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(String::from)
        .collect()
}

/// The first 8 bytes of the SHA-256 of `parts`, as a big-endian id.
fn hash_id<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    u64::from_be_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

/// A member id derived from its peer URLs and the cluster token (stable across restarts).
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    hash_id([urls.join("").as_bytes(), token.as_bytes()]) | 1
}

/// The id of a member added at runtime (etcd's MemberAdd): its peer URLs and the time, so a
/// machine that is removed and added again comes back as another member.
pub fn added_member_id(peer_urls: &[String], unix_secs: u64) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    hash_id([urls.join("").as_bytes(), unix_secs.to_string().as_bytes()]) | 1
}

/// etcd's `types.NewURLs`: each URL is http(s)://host:port or unix(s)://, with no path; the
/// result is sorted.
pub fn member_urls(urls: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(urls.len());
    for u in urls {
        let u = u.trim();
        // Go reads "host:port" as scheme "host": a scheme error either way.
        let (scheme, rest) = u.split_once("://").unwrap_or(("", u));
        let (host, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if !matches!(scheme, "http" | "https" | "unix" | "unixs") {
            return Err(format!(
                "URL scheme must be http, https, unix, or unixs: {u}"
            ));
        }
        // Go's net.SplitHostPort: a unix URL too names its socket as host:port.
        match host.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {}
            _ => {
                return Err(format!(
                    "URL address does not have the form \"host:port\": {u}"
                ))
            }
        }
        if !path.is_empty() {
            return Err(format!("URL must not contain a path: {u}"));
        }
        out.push(u.to_string());
    }
    out.sort();
    Ok(out)
}

/// A cluster id derived from its members' ids.
pub fn cluster_id(member_ids: impl Iterator<Item = u64>) -> u64 {
    let mut ids: Vec<[u8; 8]> = member_ids.map(u64::to_be_bytes).collect();
    ids.sort_unstable();
    hash_id(ids.iter().map(|b| b.as_slice()))
}

/// The cluster id of a cluster with a witness: etcd's hash of the member ids, followed by the
/// witness's id, so that members that disagree about which one is the witness are different
/// clusters and refuse each other's messages.
pub fn cluster_id_with_witness(member_ids: impl Iterator<Item = u64>, witness: u64) -> u64 {
    let mut ids: Vec<[u8; 8]> = member_ids.map(u64::to_be_bytes).collect();
    ids.sort_unstable();
    let w = witness.to_be_bytes();
    hash_id(
        ids.iter()
            .map(|b| b.as_slice())
            .chain([b"witness".as_slice(), w.as_slice()]),
    )
}

/// Parses a Go-style duration ("10m", "5s", "1h30m", "500ms") or a bare number of `unit`s.
pub fn parse_duration(s: &str, unit: Duration) -> anyhow::Result<Duration> {
    if let Ok(n) = s.parse::<f64>() {
        return Ok(unit.mul_f64(n));
    }
    let mut total = Duration::ZERO;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut u = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphabetic() {
                u.push(n);
                chars.next();
            } else {
                break;
            }
        }
        let n: f64 = num
            .parse()
            .with_context(|| format!("invalid duration {s:?}"))?;
        num.clear();
        let d = match u.as_str() {
            "ns" => Duration::from_nanos(1),
            "us" | "µs" => Duration::from_micros(1),
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => bail!("invalid duration {s:?}: unknown unit {u:?}"),
        };
        total += d.mul_f64(n);
    }
    if !num.is_empty() {
        bail!("invalid duration {s:?}: missing unit");
    }
    Ok(total)
}

/// As etcd: a secure listen URL needs that side's certificate and key; a plain one given them
/// ignores them (with a warning).
fn check_schemes(
    urls: &[String],
    settings: &tls::Settings,
    auto: bool,
    side: &str,
    flags: &str,
) -> anyhow::Result<()> {
    let has_tls = !settings.is_empty() || auto;
    for url in urls {
        let secure = url.starts_with("https://") || url.starts_with("unixs://");
        if secure && !has_tls {
            bail!("TLS key/cert ({flags}) must be provided for {side} url {url} with HTTPS scheme");
        }
        if !secure && has_tls {
            tracing::warn!(
                url = %url,
                "scheme is http or unix while key and cert files are present; ignoring key and cert files"
            );
        }
    }
    Ok(())
}

/// Whether a listen URL is served over TLS.
pub fn is_secure(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("unixs://")
}

/// The socket file of a `unix://` or `unixs://` listen URL, as etcd names it: its host and port
/// (`unix://localhost:2379` is the file `localhost:2379` in the working directory).
pub fn unix_socket_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("unix://")
        .or_else(|| url.strip_prefix("unixs://"))?;
    Some(std::path::PathBuf::from(rest))
}

/// The socket address of an `http://host:port` or `https://host:port` URL.
pub async fn listen_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = if let Some(r) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    {
        r
    } else {
        bail!("{url}: a listen URL must start with http:// or https://");
    };
    let hostport = rest.trim_end_matches('/');
    let mut addrs = tokio::net::lookup_host(hostport)
        .await
        .with_context(|| format!("resolving {hostport}"))?;
    addrs
        .next()
        .with_context(|| format!("{hostport} resolves to no address"))
}

impl Flags {
    /// Parses the command line, accepting Go's single-dash long flags (`-name x`) as etcd does.
    pub fn parse_etcd_style() -> Self {
        let args = std::env::args().enumerate().map(|(i, a)| {
            if i > 0 && a.starts_with('-') && !a.starts_with("--") && a.len() > 2 {
                format!("-{a}")
            } else {
                a
            }
        });
        Flags::parse_from(args)
    }

    /// Checks the flags and derives the member and cluster ids.
    pub fn resolve(self) -> anyhow::Result<Config> {
        if let Some((flag, env)) = self.unsupported.first_given() {
            bail!("--{flag} ({env}) is not supported by tandem yet; remove it to start");
        }
        let extensive_metrics = match self.metrics.as_str() {
            "basic" => false,
            "extensive" => true,
            m => bail!("--metrics={m}: unknown metrics type (must be basic or extensive)"),
        };
        let inert_flags = self
            .inert
            .given()
            .into_iter()
            .map(|(flag, value, why)| format!("--{flag}={value}: {why}"))
            .collect();
        let grpc_keepalive = (
            parse_duration(&self.grpc_keepalive_interval, Duration::from_secs(1))?,
            parse_duration(&self.grpc_keepalive_timeout, Duration::from_secs(1))?,
        );
        if self.logger != "zap" {
            bail!("--logger={}: only \"zap\" is supported", self.logger);
        }
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", self.name)));
        let advertise_peer_urls = split_urls(&self.initial_advertise_peer_urls);
        let initial_cluster = self
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={}", self.name, advertise_peer_urls.join(",")));
        let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for part in split_urls(&initial_cluster) {
            let (name, url) = part
                .split_once('=')
                .with_context(|| format!("--initial-cluster: {part:?} is not name=url"))?;
            by_name
                .entry(name.to_string())
                .or_default()
                .push(url.to_string());
        }
        let Some(own_urls) = by_name.get(&self.name) else {
            bail!(
                "--initial-cluster has no entry for this member's --name {:?}",
                self.name
            );
        };
        let mut own_sorted = own_urls.clone();
        own_sorted.sort();
        let mut adv_sorted = advertise_peer_urls.clone();
        adv_sorted.sort();
        if own_sorted != adv_sorted {
            bail!(
                "--initial-cluster must include {}={} given --initial-advertise-peer-urls={}",
                self.name,
                advertise_peer_urls.join(","),
                advertise_peer_urls.join(",")
            );
        }
        let token = &self.initial_cluster_token;
        let advertise_client_urls = split_urls(&self.advertise_client_urls);
        // Every member of a new cluster must bootstrap with the same membership, so it holds
        // only what all of them know (names and peer URLs); each member publishes its client
        // URLs once a leader is known. A single member knows its own from the start.
        let sole_member = by_name.len() == 1;
        let witness = self
            .initial_cluster_witness
            .as_deref()
            .filter(|w| !w.is_empty());
        if let Some(w) = witness {
            if !by_name.contains_key(w) {
                bail!(
                    "--initial-cluster-witness={w}: no member of --initial-cluster is named {w:?} \
                     (members: {})",
                    by_name.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            if by_name.len() < 2 {
                bail!("--initial-cluster-witness={w}: a cluster needs a data member besides the witness");
            }
        }
        let fence_command = self.fence_command.filter(|c| !c.trim().is_empty());
        if let (Some(_), Some(w)) = (&fence_command, witness) {
            bail!(
                "--fence-command: the cluster has a witness ({w}); fencing is for two data members \
                 without one"
            );
        }
        let is_witness = witness == Some(self.name.as_str());
        let quota = if self.quota_backend_bytes <= 0 {
            DEFAULT_QUOTA_BYTES
        } else {
            self.quota_backend_bytes
        };
        let mut initial_members = BTreeMap::new();
        for (name, urls) in &by_name {
            let id = member_id(urls, token);
            let client_urls = if sole_member {
                advertise_client_urls.clone()
            } else {
                Vec::new()
            };
            initial_members.insert(
                id,
                MemberNode {
                    name: name.clone(),
                    peer_urls: urls.clone(),
                    client_urls,
                    witness: witness == Some(name.as_str()),
                },
            );
        }
        let self_node = MemberNode {
            name: self.name.clone(),
            peer_urls: own_urls.clone(),
            // The witness serves no client: it publishes no client URLs.
            client_urls: if is_witness {
                Vec::new()
            } else {
                advertise_client_urls.clone()
            },
            witness: is_witness,
        };
        let bootstrap = match self.initial_cluster_state.as_str() {
            "new" => true,
            "existing" => false,
            s => bail!("--initial-cluster-state={s}: must be \"new\" or \"existing\""),
        };
        let retention = self.auto_compaction_retention.trim();
        let auto_compaction = match self.auto_compaction_mode.as_str() {
            _ if retention == "0" || retention.is_empty() => AutoCompaction::Disabled,
            "periodic" => {
                AutoCompaction::Periodic(parse_duration(retention, Duration::from_secs(3600))?)
            }
            "revision" => AutoCompaction::Revision(retention.parse().with_context(|| {
                format!("--auto-compaction-retention={retention}: not a revision count")
            })?),
            m => bail!("--auto-compaction-mode={m}: must be \"periodic\" or \"revision\""),
        };
        if self.election_timeout < 5 * self.heartbeat_interval {
            bail!(
                "--election-timeout[{}ms] should be at least 5 times as --heartbeat-interval[{}ms]",
                self.election_timeout,
                self.heartbeat_interval
            );
        }
        let progress_notify_interval = parse_duration(
            &self.experimental_watch_progress_notify_interval,
            Duration::from_secs(1),
        )?;
        if progress_notify_interval.is_zero() {
            bail!("--experimental-watch-progress-notify-interval must be positive");
        }
        crate::authn::TokenOptions::parse(&self.auth_token)?;
        let member_id = member_id(&advertise_peer_urls, token);
        let tls = Tls::from_flags(&self.tls)?;
        let client_urls = split_urls(&self.listen_client_urls);
        let peer_urls = split_urls(&self.listen_peer_urls);
        for (flag, value, urls) in [
            ("listen-client-urls", &self.listen_client_urls, &client_urls),
            ("listen-peer-urls", &self.listen_peer_urls, &peer_urls),
        ] {
            if let Err(e) = member_urls(urls) {
                bail!("invalid value \"{value}\" for flag -{flag}: {e}");
            }
        }
        check_schemes(
            &client_urls,
            &tls.client,
            tls.client_auto,
            "client",
            "--cert-file, --key-file",
        )?;
        check_schemes(
            &peer_urls,
            &tls.peer,
            tls.peer_auto,
            "peer",
            "--peer-cert-file, --peer-key-file",
        )?;
        Ok(Config {
            name: self.name,
            data_dir,
            client_urls,
            advertise_client_urls,
            peer_urls,
            advertise_peer_urls,
            member_id,
            cluster_id: match witness {
                Some(w) => {
                    let wid = self::member_id(&by_name[w], token);
                    cluster_id_with_witness(initial_members.keys().copied(), wid)
                }
                None => cluster_id(initial_members.keys().copied()),
            },
            initial_members,
            is_witness,
            incarnation: 0,
            self_node,
            bootstrap,
            quota_backend_bytes: quota,
            backend_cache_bytes: self.backend_cache_bytes,
            witness_max_payload_bytes: match self.witness_max_payload_bytes {
                0 => quota as u64,
                cap => cap,
            },
            max_request_bytes: self.max_request_bytes,
            max_txn_ops: self.max_txn_ops,
            auth_token: self.auth_token.clone(),
            inert_flags,
            grpc_keepalive,
            max_concurrent_streams: self.max_concurrent_streams,
            extensive_metrics,
            auth_token_ttl_secs: self.auth_token_ttl,
            bcrypt_cost: crate::authn::bcrypt_cost(self.bcrypt_cost),
            auto_compaction,
            heartbeat_interval_ms: self.heartbeat_interval,
            election_timeout_ms: self.election_timeout,
            snapshot_count: self.snapshot_count.max(1),
            snapshot_catchup_entries: self.experimental_snapshot_catchup_entries,
            progress_notify_interval,
            initial_corrupt_check: match self.experimental_initial_corrupt_check.as_str() {
                "true" => true,
                "false" => false,
                v => bail!("--experimental-initial-corrupt-check={v}: must be true or false"),
            },
            corrupt_check_interval: parse_duration(
                &self.experimental_corrupt_check_time,
                Duration::from_secs(1),
            )?,
            server_version: self.server_version,
            fence: fence_command.map(|command| FenceConfig {
                command,
                delay: Duration::from_millis(self.fence_delay),
                timeout: Duration::from_millis(self.fence_timeout),
            }),
            metrics_urls: self
                .listen_metrics_urls
                .as_deref()
                .map(split_urls)
                .unwrap_or_default(),
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("10m", Duration::from_secs(1)).unwrap(),
            Duration::from_secs(600)
        );
        assert_eq!(
            parse_duration("1h30m", Duration::from_secs(1)).unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_duration("500ms", Duration::from_secs(1)).unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_duration("2", Duration::from_secs(3600)).unwrap(),
            Duration::from_secs(7200)
        );
        assert!(parse_duration("5x", Duration::from_secs(1)).is_err());
    }

    #[test]
    fn defaults_resolve_to_one_member() {
        let c = Flags::parse_from(["tandem"]).resolve().unwrap();
        assert_eq!(c.data_dir, PathBuf::from("default.etcd"));
        assert_eq!(c.initial_members.len(), 1);
        assert!(c.initial_members.contains_key(&c.member_id));
        assert_eq!(c.quota_backend_bytes, DEFAULT_QUOTA_BYTES);
        assert_eq!(c.progress_notify_interval, Duration::from_secs(600));
        assert_eq!(c.backend_cache_bytes, 24 << 20);
        let c = Flags::parse_from(["tandem", "--backend-cache-bytes", "67108864"])
            .resolve()
            .unwrap();
        assert_eq!(c.backend_cache_bytes, 64 << 20);
    }

    #[test]
    fn member_urls_are_checked_as_etcd_checks_them() {
        let ok = |u: &[&str]| member_urls(&u.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            ok(&["http://b:2", " http://a:1"]),
            Ok(vec!["http://a:1".to_string(), "http://b:2".to_string()])
        );
        assert!(ok(&["unix://localhost:1", "unixs://a:2"]).is_ok());
        for (bad, why) in [
            ("unix://x", "host:port"),
            ("unix:///run/etcd.sock", "host:port"),
            ("localhost:2380", "URL scheme must be"),
            ("ftp://a:1", "URL scheme must be"),
            ("http://a", "host:port"),
            ("http://a:x", "host:port"),
            ("http://a:1/p", "must not contain a path"),
        ] {
            let e = ok(&[bad]).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
        // The time makes a member added again another member.
        let urls = vec!["http://a:1".to_string()];
        assert_ne!(added_member_id(&urls, 1), added_member_id(&urls, 2));
    }

    #[test]
    fn members_of_a_new_cluster_bootstrap_the_same_membership() {
        // Every member must call raft's initialize with the same membership, or their logs
        // diverge at the very first entry: only what all of them know goes in.
        let cluster = "a=http://10.0.0.1:2380,b=http://10.0.0.2:2380";
        let resolve = |name: &str, ip: &str| {
            Flags::parse_from([
                "tandem".to_string(),
                format!("--name={name}"),
                format!("--initial-cluster={cluster}"),
                format!("--initial-advertise-peer-urls=http://{ip}:2380"),
                format!("--advertise-client-urls=http://{ip}:2379"),
            ])
            .resolve()
            .unwrap()
        };
        let a = resolve("a", "10.0.0.1");
        let b = resolve("b", "10.0.0.2");
        assert_eq!(a.initial_members, b.initial_members);
        assert_eq!(a.cluster_id, b.cluster_id);
        assert_ne!(a.member_id, b.member_id);
        assert!(a.initial_members.values().all(|m| m.client_urls.is_empty()));
        assert_eq!(a.self_node.client_urls, ["http://10.0.0.1:2379"]);
        assert_eq!(
            a.initial_members[&a.member_id].peer_urls,
            a.self_node.peer_urls
        );
        // Another token is another cluster.
        let other = Flags::parse_from([
            "tandem",
            "--name=a",
            &format!("--initial-cluster={cluster}"),
            "--initial-advertise-peer-urls=http://10.0.0.1:2380",
            "--initial-cluster-token=other",
        ])
        .resolve()
        .unwrap();
        assert_ne!(other.cluster_id, a.cluster_id);
    }

    #[test]
    fn unsupported_flags_are_refused() {
        let err = Flags::parse_from(["tandem", "--enable-pprof"])
            .resolve()
            .unwrap_err();
        assert!(err.to_string().contains("--enable-pprof"), "{err}");
        assert!(err.to_string().contains("not supported"), "{err}");
    }

    #[test]
    fn the_fence_command_is_for_two_data_members_without_a_witness() {
        let cluster = "a=http://10.0.0.1:2380,b=http://10.0.0.2:2380,w=http://10.0.0.3:2380";
        let base = [
            "tandem",
            "--name=a",
            "--initial-advertise-peer-urls=http://10.0.0.1:2380",
        ];
        let resolve = |extra: &[&str]| {
            let mut args: Vec<String> = base.iter().map(|s| s.to_string()).collect();
            args.extend(extra.iter().map(|s| s.to_string()));
            Flags::parse_from(args).resolve()
        };
        let two = "--initial-cluster=a=http://10.0.0.1:2380,b=http://10.0.0.2:2380";
        let c = resolve(&[two, "--fence-command=fence_redfish -n \"$1\""]).unwrap();
        assert_eq!(
            c.fence,
            Some(FenceConfig {
                command: "fence_redfish -n \"$1\"".into(),
                delay: Duration::from_millis(5000),
                timeout: Duration::from_secs(60),
            })
        );
        assert_eq!(resolve(&[two, "--fence-command= "]).unwrap().fence, None);
        assert_eq!(resolve(&[two]).unwrap().fence, None);
        let err = resolve(&[
            &format!("--initial-cluster={cluster}"),
            "--initial-cluster-witness=w",
            "--fence-command=true",
        ])
        .unwrap_err();
        assert!(
            err.to_string().contains("the cluster has a witness (w)"),
            "{err}"
        );
    }
}
