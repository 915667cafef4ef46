//! Command line and environment (`TCR_<FLAG>`) configuration of a node.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReadConsistency {
    /// Every tag/manifest read confirms leadership (read index) first.
    Linearizable,
    /// Serve reads from the local state machine without confirmation.
    Stale,
}

/// Which reads are checked before their bytes are served (a corrupt copy
/// is cut off before the bad bytes leave, and quarantined).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VerifyReads {
    /// Every read, whole blob or range: each chunk it touches is checked
    /// against the copy's integrity index (XXH3-128 per 1 MiB).
    All,
    /// Only blobs streamed from another node; local copies rely on scrub.
    Remote,
}

#[derive(Clone, Debug, Parser)]
#[command(
    name = "tcr-node",
    version,
    about = "A tcr registry node",
    args_override_self = true
)]
pub struct Config {
    /// This node's id in the cluster (stable for the node's lifetime).
    #[arg(long, env = "TCR_NODE_ID", default_value_t = 1)]
    pub node_id: u64,
    /// Where metadata (Raft, RocksDB) and blobs live.
    #[arg(long, env = "TCR_DATA_DIR", default_value = "./tcr-data")]
    pub data_dir: PathBuf,
    /// HTTP listener: the OCI API, management API, token endpoint, metrics.
    #[arg(long, env = "TCR_HTTP_ADDR", default_value = "127.0.0.1:5000")]
    pub http_addr: SocketAddr,
    /// RPC listener for other nodes.
    #[arg(long, env = "TCR_RPC_ADDR", default_value = "127.0.0.1:5001")]
    pub rpc_addr: SocketAddr,
    /// The HTTP address other nodes and redirects use (default: --http-addr).
    #[arg(long, env = "TCR_ADVERTISE_HTTP_ADDR")]
    pub advertise_http_addr: Option<String>,
    /// The RPC address other nodes use (default: --rpc-addr).
    #[arg(long, env = "TCR_ADVERTISE_RPC_ADDR")]
    pub advertise_rpc_addr: Option<String>,
    /// Settings file (TOML); flags and env vars override it.
    #[arg(long, env = "TCR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Join an existing cluster through any member's RPC address.
    #[arg(long, env = "TCR_JOIN")]
    pub join: Option<String>,
    /// Do not initialise a new cluster on an empty data dir; wait to be added.
    #[arg(long, env = "TCR_NO_INIT")]
    pub no_init: bool,
    /// Under a StatefulSet: take the node id from the host name's ordinal
    /// (`tcr-2` is node 3; a new volume asks the cluster, see
    /// `start::settle_node_id`); ordinal 0 initialises the cluster on an
    /// empty data dir unless its peers run one, the others join via --join.
    #[arg(long, env = "TCR_ID_FROM_HOSTNAME")]
    pub id_from_hostname: bool,
    /// The pod ordinal, with --id-from-hostname.
    #[arg(skip)]
    pub ordinal: Option<u64>,
    /// How long a stopping node (SIGTERM) keeps serving while not ready,
    /// so that load balancers (a Service's endpoints) stop sending to it
    /// before it stops accepting connections.
    #[arg(long, env = "TCR_SHUTDOWN_DELAY_SECS", default_value_t = 2.0)]
    pub shutdown_delay_secs: f64,
    /// How long a stopping node (SIGTERM) waits for requests in flight.
    #[arg(long, env = "TCR_SHUTDOWN_GRACE_SECS", default_value_t = 20.0)]
    pub shutdown_grace_secs: f64,
    /// File holding the bootstrap admin token (alternative to TCR_ADMIN_TOKEN).
    #[arg(long, env = "TCR_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Consistency of tag and manifest reads.
    #[arg(long, env = "TCR_READ_CONSISTENCY", value_enum, default_value_t = ReadConsistency::Linearizable)]
    pub read_consistency: ReadConsistency,
    /// Largest accepted manifest, in bytes.
    #[arg(long, env = "TCR_MAX_MANIFEST_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_manifest_bytes: usize,
    /// Largest accepted blob, in bytes.
    #[arg(long, env = "TCR_MAX_BLOB_BYTES", default_value_t = 64 * 1024 * 1024 * 1024)]
    pub max_blob_bytes: u64,
    /// Abort an upload whose body sends nothing for this long (seconds).
    #[arg(long, env = "TCR_BODY_IDLE_TIMEOUT_SECS", default_value_t = 60.0)]
    pub body_idle_timeout_secs: f64,
    /// Seconds a client may take to send a request's headers, and to keep
    /// an idle connection open between requests.
    #[arg(long, env = "TCR_HEADER_READ_TIMEOUT_SECS", default_value_t = 10.0)]
    pub header_read_timeout_secs: f64,
    /// Most open client connections on the registry port; more are answered
    /// 503 and closed. Each costs a descriptor and tens of KiB when idle.
    #[arg(long, env = "TCR_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// A second listener for `/metrics` only, without authentication, for the
    /// cluster's Prometheus (on the registry port `/metrics` needs the
    /// operator's credential).
    #[arg(long, env = "TCR_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Free space kept on the data dir's disk (a size such as `2GiB`, or
    /// `5%`): below it new uploads and replica receives are refused (507)
    /// while pulls, deletes and GC go on, so RocksDB keeps its headroom.
    #[arg(long, env = "TCR_MIN_FREE_DISK", default_value = "256MiB")]
    pub min_free_disk: tcr_storage::Reserve,
    /// Disk kept for verified copies of blobs this node streams from their
    /// owners (a size such as `20GiB`, or a share of the data dir's disk
    /// such as `10%`; `0` turns the cache off). Least recently used out
    /// first; cached copies are never replicas, and give way first when
    /// the disk runs low.
    #[arg(long, env = "TCR_CACHE_BYTES", default_value = "10%")]
    pub cache_bytes: tcr_storage::Reserve,
    /// Open upload sessions at once per namespace on this node; past it a
    /// new upload gets 429 until some finish, are cancelled or expire.
    #[arg(long, env = "TCR_MAX_UPLOADS_PER_NAMESPACE", default_value_t = 1000)]
    pub max_uploads_per_namespace: usize,
    /// Open upload sessions at once per credential on this node.
    #[arg(long, env = "TCR_MAX_UPLOADS_PER_CREDENTIAL", default_value_t = 200)]
    pub max_uploads_per_credential: usize,
    /// Remove upload sessions idle for this many seconds.
    #[arg(long, env = "TCR_UPLOAD_IDLE_SECS", default_value_t = 24 * 3600)]
    pub upload_idle_secs: u64,
    /// Take a Raft snapshot after at least this many log entries since the
    /// last one, once the log since then is half the last snapshot's size.
    #[arg(long, env = "TCR_SNAPSHOT_LOGS", default_value_t = 20_000)]
    pub snapshot_logs: u64,
    /// Seconds between storage passes (repair, rebalance, scrub).
    #[arg(long, env = "TCR_STORAGE_INTERVAL_SECS", default_value_t = 30.0)]
    pub storage_interval_secs: f64,
    /// Bytes of local blobs re-hashed per storage pass (scrub rate).
    #[arg(long, env = "TCR_SCRUB_BYTES_PER_PASS", default_value_t = 256 * 1024 * 1024)]
    pub scrub_bytes_per_pass: u64,
    /// Bandwidth of repair and rebalance pulls, bytes per second (0: no limit).
    #[arg(long, env = "TCR_REBALANCE_BYTES_PER_SEC", default_value_t = 0)]
    pub rebalance_bytes_per_sec: u64,
    /// Blob placement weight of this node (relative capacity), announced
    /// when it joins or initialises a cluster.
    #[arg(long, env = "TCR_WEIGHT", default_value_t = 100)]
    pub weight: u32,
    /// Which reads are checked before they are served.
    #[arg(long, env = "TCR_VERIFY_READS", value_enum, default_value_t = VerifyReads::All)]
    pub verify_reads: VerifyReads,
    /// Lifetime of the tokens `/v2/token` issues (set the same on every
    /// node: key rotation retires old keys after it).
    #[arg(long, env = "TCR_TOKEN_LIFETIME_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub token_lifetime_secs: u64,
    /// Garbage collection: blobs committed less than this long ago are
    /// never collected (uploads whose manifest is still to come).
    #[arg(long, env = "TCR_GC_GRACE_SECS", default_value_t = 86_400)]
    pub gc_grace_secs: u64,
    /// Seconds between scheduled garbage collections on the leader (0: only
    /// `tcr gc run`).
    #[arg(long, env = "TCR_GC_INTERVAL_SECS", default_value_t = 86_400.0)]
    pub gc_interval_secs: f64,
    /// A local blob file without a committed record is deleted unless an
    /// upload wrote it, found it or held it this recently (its commit may
    /// still be on its way), or the node started this recently.
    #[arg(long, env = "TCR_ORPHAN_GRACE_SECS", default_value_t = 3600.0)]
    pub orphan_grace_secs: f64,
    /// Seconds between scheduled retention runs on the leader, unless the
    /// cluster setting says otherwise (0: only `tcr retention run`).
    #[arg(long, env = "TCR_RETENTION_INTERVAL_SECS", default_value_t = 86_400)]
    pub retention_interval_secs: u64,
    /// Pause between the repositories of a retention run, to spread its
    /// Raft writes under load (0: none).
    #[arg(long, env = "TCR_RETENTION_PAUSE_MS", default_value_t = 0)]
    pub retention_pause_ms: u64,
    /// Seconds between flushes of this node's recorded pull times into
    /// Raft (one command per flush, never one per pull).
    #[arg(long, env = "TCR_PULL_FLUSH_SECS", default_value_t = 30.0)]
    pub pull_flush_secs: f64,
    /// Seconds between the leader's metering ticks (gigabyte-hours).
    #[arg(long, env = "TCR_METERING_INTERVAL_SECS", default_value_t = 60.0)]
    pub metering_interval_secs: f64,
    /// RocksDB's memory for the metadata (half block cache, half
    /// memtables): a size such as 128MiB, 1GiB or a number of bytes.
    /// The node's RSS is about this plus 60-100 MiB.
    #[arg(long, env = "TCR_ROCKSDB_MEMORY", default_value = "128MiB", value_parser = parse_size)]
    pub rocksdb_memory: u64,
    /// How long the audit trail keeps events (`90d`, `12h`, `30m`): the
    /// leader forgets older ones.
    #[arg(long, env = "TCR_AUDIT_RETENTION", default_value = "90d")]
    pub audit_retention: humantime::Duration,
    /// PEM certificate chain of the registry port (leaf first). With
    /// --tls-key-file the port serves HTTPS only; both files are re-read
    /// when they change, without a restart.
    #[arg(long, env = "TCR_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "TCR_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// The registry's URL as its clients reach it (https://registry.example):
    /// the base of the token realm in challenges and of redirects. Default:
    /// this node's advertised HTTP address, https when TLS is on.
    #[arg(long, env = "TCR_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// PEM CA that every node's peer certificate chains to: the RPC port
    /// requires a client certificate from it, and calls to other nodes
    /// accept only server certificates from it that name the host called.
    #[arg(long, env = "TCR_PEER_CA_FILE")]
    pub peer_ca_file: Option<PathBuf>,
    /// PEM certificate this node presents to its peers (both directions);
    /// it must name the host of --advertise-rpc-addr.
    #[arg(long, env = "TCR_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,
    /// PEM private key of --peer-cert-file.
    #[arg(long, env = "TCR_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// Allow plain-text node-to-node traffic on a non-loopback RPC address
    /// (a throw-away test network only: anyone who reaches the port can
    /// read blobs and change the cluster's state).
    #[arg(long, env = "TCR_INSECURE_PEERS")]
    pub insecure_peers: bool,
    /// `service` in token challenges and the audience of tokens.
    #[arg(long, env = "TCR_TOKEN_SERVICE", default_value = "tcr")]
    pub token_service: String,
}

impl Default for Config {
    fn default() -> Self {
        Config::parse_from(["tcr-node"])
    }
}

impl Config {
    /// Flags and env vars, over the TOML file named by `--config`, over defaults.
    pub fn load() -> anyhow::Result<Config> {
        let mut cfg = Config::load_flags()?;
        if cfg.id_from_hostname {
            let host = std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
                .unwrap_or_default();
            let ordinal = ordinal(host.trim()).ok_or_else(|| {
                anyhow::anyhow!(
                    "--id-from-hostname: host name '{}' does not end in -<ordinal>",
                    host.trim()
                )
            })?;
            cfg.node_id = ordinal + 1;
            cfg.ordinal = Some(ordinal);
            // Ordinal 0 initialises unless it finds the cluster already
            // running (see `start::settle_node_id`); the others join.
            if ordinal > 0 {
                cfg.no_init = true;
            }
        }
        Ok(cfg)
    }

    fn load_flags() -> anyhow::Result<Config> {
        let from_args = Config::parse();
        let Some(path) = from_args.config.clone() else {
            return Ok(from_args);
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("reading config {}: {e}", path.display()))?;
        let file: toml::Table = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("parsing config {}: {e}", path.display()))?;
        // Turn the file into arguments placed before the real ones, so that
        // flags and env vars given explicitly win.
        let mut args = vec!["tcr-node".to_string()];
        for (k, v) in file {
            let env = format!("TCR_{}", k.to_uppercase().replace('-', "_"));
            if std::env::var_os(env).is_some() {
                continue;
            }
            match v {
                toml::Value::Boolean(true) => args.push(format!("--{k}")),
                toml::Value::Boolean(false) => {}
                toml::Value::String(s) => args.push(format!("--{k}={s}")),
                other => args.push(format!("--{k}={other}")),
            }
        }
        args.extend(std::env::args().skip(1));
        Ok(Config::try_parse_from(args)?)
    }

    pub fn advertise_http(&self) -> String {
        self.advertise_http_addr
            .clone()
            .unwrap_or_else(|| self.http_addr.to_string())
    }

    /// The registry port's certificate and key, when both are given.
    pub fn registry_tls(&self) -> anyhow::Result<Option<(PathBuf, PathBuf)>> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(c), Some(k)) => Ok(Some((c.clone(), k.clone()))),
            (None, None) => Ok(None),
            _ => anyhow::bail!(
                "--tls-cert-file and --tls-key-file go together: give both or neither"
            ),
        }
    }

    /// The peer CA, certificate and key, when all three are given.
    pub fn peer_tls(&self) -> anyhow::Result<Option<(PathBuf, PathBuf, PathBuf)>> {
        match (&self.peer_ca_file, &self.peer_cert_file, &self.peer_key_file) {
            (Some(ca), Some(c), Some(k)) => Ok(Some((ca.clone(), c.clone(), k.clone()))),
            (None, None, None) => Ok(None),
            _ => anyhow::bail!(
                "--peer-ca-file, --peer-cert-file and --peer-key-file go together: give all three or none"
            ),
        }
    }

    /// The base URL clients are sent to (token realm, redirects), without
    /// a trailing slash.
    pub fn public_base(&self) -> anyhow::Result<String> {
        let tls = self.tls_cert_file.is_some();
        let Some(url) = &self.public_url else {
            let scheme = if tls { "https" } else { "http" };
            return Ok(format!("{scheme}://{}", self.advertise_http()));
        };
        let url = url.trim_end_matches('/');
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| {
                anyhow::anyhow!("--public-url {url}: must start with https:// or http://")
            })?;
        // It is quoted in a header: nothing that could end the quote or
        // the header, and a host that a URI parser accepts.
        if rest.is_empty()
            || url
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\')
            || url.parse::<http::Uri>().is_err()
        {
            anyhow::bail!("--public-url {url}: not a valid URL");
        }
        Ok(url.to_string())
    }

    pub fn advertise_rpc(&self) -> String {
        self.advertise_rpc_addr
            .clone()
            .unwrap_or_else(|| self.rpc_addr.to_string())
    }
}

pub use tcr_storage::parse_size;

/// The ordinal a StatefulSet gives a pod: `tcr-12` -> 12.
pub fn ordinal(host: &str) -> Option<u64> {
    let (_, n) = host.split('.').next()?.rsplit_once('-')?;
    n.parse().ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn sizes_parse_in_every_unit(n in 0u64..1 << 23, unit in 0usize..5, long in any::<bool>()) {
            let (names, shift) = [(["", ""], 0), (["K", "KiB"], 10), (["M", "MiB"], 20), (["G", "GiB"], 30), (["T", "TiB"], 40)][unit];
            let text = format!("{n}{}", names[usize::from(long)]);
            prop_assert_eq!(super::parse_size(&text), Ok(n << shift));
        }

        #[test]
        fn anything_else_is_refused_with_a_message(s in "\\PC*") {
            if let Err(e) = super::parse_size(&s) {
                prop_assert!(e.contains(&s));
            }
        }
    }

    #[test]
    fn sizes_that_are_not_sizes_are_refused() {
        for bad in ["", "MiB", "12PiB", "-1", "1.5GiB", "99999999999999999999"] {
            assert!(super::parse_size(bad).is_err(), "{bad}");
        }
        assert!(super::parse_size("18446744073709551615GiB").is_err());
    }

    #[test]
    fn ordinals_come_from_the_last_dash() {
        assert_eq!(super::ordinal("tcr-0"), Some(0));
        assert_eq!(super::ordinal("my-registry-12.tcr-peers.ns.svc"), Some(12));
        assert_eq!(super::ordinal("tcr"), None);
        assert_eq!(super::ordinal("tcr-x"), None);
    }
}
