//! Broker settings (TOML file, then flags and environment) and topic configs by their
//! Kafka names.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::shown;
use crate::log::{FlushPolicy, LogConfig};

/// Settings of one broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// This broker's id in the cluster.
    pub node_id: u32,
    /// Address the client-facing gRPC server listens on.
    pub listen: SocketAddr,
    /// Address clients are told to use (defaults to the bound address).
    pub advertised_address: Option<String>,
    /// Address of the HTTP port (`/metrics`, `/health/live`); none without it.
    pub http_listen: Option<SocketAddr>,
    /// Address of the Kafka-protocol listener (`host:port`, port 0 picks a free one), or
    /// `off`. Default: `listen`'s host, port [`DEFAULT_KAFKA_PORT`] when `listen` has the
    /// default port 9092, else a free port (so brokers sharing a host never collide);
    /// the bound address is printed and advertised.
    pub kafka_listen: Option<String>,
    /// Address Kafka clients are told to use (Metadata); defaults to the bound one.
    pub kafka_advertised_address: Option<String>,
    /// Where partition logs and topic metadata live.
    pub data_dir: PathBuf,
    /// Largest total of record bytes one produce request may carry.
    pub max_request_bytes: usize,
    /// How often retention runs.
    pub retention_check_interval_ms: u64,
    /// Partitions of a topic created without a count.
    pub default_partitions: u32,
    /// Most partitions one topic may be created with (a guard against a typo taking
    /// the disk: every partition replica holds at least 1 MiB).
    pub max_partitions_per_topic: u32,
    /// Most partitions the cluster (or single broker) holds in all, internal topics
    /// included; a create that would pass it is refused.
    pub max_partitions: u32,
    /// The cluster's brokers as `id=host:port,...` (this broker included); each address
    /// serves clients and peers. Empty: a single broker without replication.
    pub peers: String,
    /// Brokers of a running cluster to join through, `host:port,...` (any of them; the
    /// broker then learns the others from the metadata). Used on the first start only:
    /// a broker that joined remembers its cluster.
    pub join: String,
    /// Defaults for topic configs, by Kafka name (`retention.ms`, `flush`, ...).
    pub log: BTreeMap<String, String>,
    /// TLS on the listener and the peer links (`[tls]`; none: plaintext).
    pub tls: crate::tls::TlsSettings,
    /// Bearer-token authentication of client requests (`[auth]`; off by default).
    pub auth: crate::auth::AuthSettings,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_GRPC_PORT)),
            advertised_address: None,
            http_listen: None,
            kafka_listen: None,
            kafka_advertised_address: None,
            data_dir: PathBuf::from("./rafka-data"),
            max_request_bytes: 64 << 20,
            retention_check_interval_ms: 5 * 60 * 1000,
            default_partitions: 1,
            max_partitions_per_topic: 10_000,
            max_partitions: 20_000,
            peers: String::new(),
            join: String::new(),
            log: BTreeMap::new(),
            tls: Default::default(),
            auth: Default::default(),
        }
    }
}

/// The gRPC listener's port by default.
pub const DEFAULT_GRPC_PORT: u16 = 9092;
/// The Kafka listener's port beside a gRPC listener on [`DEFAULT_GRPC_PORT`].
pub const DEFAULT_KAFKA_PORT: u16 = 9093;

impl BrokerConfig {
    /// Where the Kafka listener listens (none: `off`).
    pub fn kafka_listen_addr(&self) -> Result<Option<SocketAddr>, String> {
        match self.kafka_listen.as_deref().map(str::trim) {
            Some("off") => Ok(None),
            Some(a) => a
                .parse()
                .map(Some)
                .map_err(|_| format!("kafka_listen `{}` is neither host:port nor `off`", shown(a))),
            None => {
                let port = match self.listen.port() {
                    DEFAULT_GRPC_PORT => DEFAULT_KAFKA_PORT,
                    _ => 0,
                };
                Ok(Some(SocketAddr::new(self.listen.ip(), port)))
            }
        }
    }

    /// The Kafka address this broker advertises: the configured one, else its bound
    /// listener (once `kafka_listen` names it).
    pub fn kafka_advertised(&self) -> Option<String> {
        if let Some(a) = &self.kafka_advertised_address {
            return Some(a.clone());
        }
        match self.kafka_listen_addr() {
            Ok(Some(a)) if a.port() != 0 => Some(a.to_string()),
            _ => None,
        }
    }

    /// Reads a TOML file; missing keys keep their defaults, unknown keys are errors.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("bad config {}: {e}", path.display()))
    }

    /// Topic settings for a topic without overrides.
    pub fn topic_defaults(&self) -> Result<LogConfig, String> {
        apply_topic_configs(&LogConfig::default(), &self.log)
    }

    /// The peers by broker id (empty for a single broker).
    pub fn peer_map(&self) -> Result<BTreeMap<u32, String>, String> {
        parse_peers(&self.peers)
    }

    /// The partition count of a topic created with `requested` partitions (0: the
    /// default), checked against the limits given the `existing` partitions.
    pub fn partitions_for(&self, requested: u32, existing: u64) -> Result<u32, String> {
        let partitions = match requested {
            0 => self.default_partitions,
            n => n,
        };
        let per_topic = self
            .max_partitions_per_topic
            .min(crate::topics::MAX_PARTITIONS);
        if !(1..=per_topic).contains(&partitions) {
            return Err(format!(
                "a topic has 1 to {per_topic} partitions (max_partitions_per_topic), not {partitions}"
            ));
        }
        if existing + partitions as u64 > self.max_partitions as u64 {
            return Err(format!(
                "{partitions} more partitions would make {} in the cluster, over its limit of {} \
                 (max_partitions)",
                existing + partitions as u64,
                self.max_partitions
            ));
        }
        Ok(partitions)
    }

    /// How often retention runs.
    pub fn retention_check_interval(&self) -> Duration {
        Duration::from_millis(self.retention_check_interval_ms.max(1))
    }
}

/// Parses `id=host:port,...`.
pub fn parse_peers(text: &str) -> Result<BTreeMap<u32, String>, String> {
    let mut peers = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("peer `{part}` must be id=host:port"))?;
        let id: u32 = id
            .trim()
            .parse()
            .map_err(|_| format!("peer `{part}`: `{id}` is not a broker id"))?;
        let addr = addr.trim();
        if addr.is_empty() || !addr.contains(':') {
            return Err(format!("peer `{part}`: `{addr}` is not host:port"));
        }
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(format!("broker id {id} appears twice in the peer list"));
        }
    }
    Ok(peers)
}

/// The topic config names rafka understands.
pub const TOPIC_CONFIG_NAMES: [&str; 6] = [
    "retention.ms",
    "retention.bytes",
    "segment.bytes",
    "segment.ms",
    "index.interval.bytes",
    "flush",
];

/// `base` with the Kafka-named settings in `configs` applied. `-1` disables
/// `retention.ms`, `retention.bytes` and `segment.ms`, as in Kafka.
pub fn apply_topic_configs(
    base: &LogConfig,
    configs: &BTreeMap<String, String>,
) -> Result<LogConfig, String> {
    let mut c = base.clone();
    for (key, value) in configs {
        let num = || -> Result<i64, String> {
            value
                .trim()
                .parse::<i64>()
                .map_err(|_| format!("{key} must be an integer, not `{}`", shown(value)))
        };
        let optional_ms = |v: i64| -> Result<Option<Duration>, String> {
            match v {
                -1 => Ok(None),
                v if v > 0 => Ok(Some(Duration::from_millis(v as u64))),
                _ => Err(format!("{key} must be positive or -1, not {v}")),
            }
        };
        match key.as_str() {
            "retention.ms" => c.retention_ms = optional_ms(num()?)?,
            "segment.ms" => c.segment_ms = optional_ms(num()?)?,
            "retention.bytes" => {
                c.retention_bytes = match num()? {
                    -1 => None,
                    v if v > 0 => Some(v as u64),
                    v => return Err(format!("retention.bytes must be positive or -1, not {v}")),
                }
            }
            "segment.bytes" => {
                c.segment_bytes = u64::try_from(num()?)
                    .map_err(|_| "segment.bytes must be positive".to_string())?
            }
            "index.interval.bytes" => {
                c.index_interval_bytes = u64::try_from(num()?)
                    .map_err(|_| "index.interval.bytes must not be negative".to_string())?
            }
            "flush" => c.flush = value.parse::<FlushPolicy>().map_err(|e| e.to_string())?,
            other => {
                return Err(format!(
                    "unknown topic config `{}`; known: {}",
                    shown(other),
                    TOPIC_CONFIG_NAMES.join(", ")
                ))
            }
        }
    }
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

/// The settings of `c` by Kafka name (the form `describe` shows).
pub fn topic_config_map(c: &LogConfig) -> BTreeMap<String, String> {
    let ms = |d: Option<Duration>| d.map_or("-1".to_string(), |d| d.as_millis().to_string());
    BTreeMap::from([
        ("retention.ms".to_string(), ms(c.retention_ms)),
        (
            "retention.bytes".to_string(),
            c.retention_bytes
                .map_or("-1".to_string(), |b| b.to_string()),
        ),
        ("segment.bytes".to_string(), c.segment_bytes.to_string()),
        ("segment.ms".to_string(), ms(c.segment_ms)),
        (
            "index.interval.bytes".to_string(),
            c.index_interval_bytes.to_string(),
        ),
        ("flush".to_string(), c.flush.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn topic_configs_round_trip_and_reject_nonsense() {
        let c = apply_topic_configs(
            &LogConfig::default(),
            &map(&[
                ("retention.ms", "-1"),
                ("segment.bytes", "1048576"),
                ("flush", "os"),
            ]),
        )
        .unwrap();
        assert_eq!(c.retention_ms, None);
        assert_eq!(c.segment_bytes, 1 << 20);
        assert_eq!(c.flush, FlushPolicy::Os);
        let shown = topic_config_map(&c);
        assert_eq!(
            apply_topic_configs(&LogConfig::default(), &shown).unwrap(),
            c
        );
        for (k, v, says) in [
            ("retention.ms", "soon", "must be an integer"),
            ("segment.bytes", "10", "segment.bytes"),
            ("flush", "never", "flush must be"),
            ("cleanup.policy", "compact", "unknown topic config"),
        ] {
            let err = apply_topic_configs(&LogConfig::default(), &map(&[(k, v)])).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn broker_config_parses_toml() {
        let c: BrokerConfig = toml::from_str(
            "node_id = 3\nlisten = \"127.0.0.1:0\"\n[log]\n\"retention.ms\" = \"1000\"\n",
        )
        .unwrap();
        assert_eq!(c.node_id, 3);
        assert_eq!(
            c.topic_defaults().unwrap().retention_ms,
            Some(Duration::from_secs(1))
        );
        assert!(toml::from_str::<BrokerConfig>("nodeid = 3").is_err());
    }

    #[test]
    fn peers_parse_and_reject_nonsense() {
        let p = parse_peers("1=127.0.0.1:9092, 2=h:9093").unwrap();
        assert_eq!(p[&1], "127.0.0.1:9092");
        assert_eq!(p[&2], "h:9093");
        assert!(parse_peers("").unwrap().is_empty());
        for (bad, says) in [
            ("1:127.0.0.1:1", "must be id=host:port"),
            ("x=h:1", "not a broker id"),
            ("1=host", "not host:port"),
            ("1=h:1,1=h:2", "appears twice"),
        ] {
            let err = parse_peers(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn partition_limits_are_checked_per_topic_and_in_all() {
        let config = BrokerConfig {
            default_partitions: 3,
            max_partitions_per_topic: 8,
            max_partitions: 10,
            ..Default::default()
        };
        assert_eq!(config.partitions_for(0, 0), Ok(3), "0 is the default");
        assert_eq!(config.partitions_for(8, 2), Ok(8));
        let per_topic = config.partitions_for(9, 0).unwrap_err();
        assert!(
            per_topic.contains("max_partitions_per_topic"),
            "{per_topic}"
        );
        let in_all = config.partitions_for(8, 3).unwrap_err();
        assert!(in_all.contains("11 in the cluster"), "{in_all}");
        assert!(in_all.contains("max_partitions"), "{in_all}");
        let defaults = BrokerConfig::default();
        assert_eq!(defaults.partitions_for(10_000, 0), Ok(10_000));
        assert!(defaults.partitions_for(10_001, 0).is_err());
        assert!(defaults.partitions_for(10_000, 10_001).is_err());
    }

    #[test]
    fn the_kafka_listener_defaults_beside_the_grpc_one_and_can_be_off() {
        let mut c = BrokerConfig::default();
        assert_eq!(
            c.kafka_listen_addr().unwrap().unwrap().to_string(),
            "127.0.0.1:9093"
        );
        assert_eq!(c.kafka_advertised().as_deref(), Some("127.0.0.1:9093"));
        c.listen = "127.0.0.1:7000".parse().unwrap();
        assert_eq!(
            c.kafka_listen_addr().unwrap().unwrap().port(),
            0,
            "a free port"
        );
        assert_eq!(c.kafka_advertised(), None, "known once bound");
        c.kafka_listen = Some("127.0.0.1:19093".into());
        assert_eq!(c.kafka_advertised().as_deref(), Some("127.0.0.1:19093"));
        c.kafka_advertised_address = Some("kafka.example:9093".into());
        assert_eq!(c.kafka_advertised().as_deref(), Some("kafka.example:9093"));
        c.kafka_listen = Some("off".into());
        assert_eq!(c.kafka_listen_addr().unwrap(), None);
        c.kafka_listen = Some("nonsense".into());
        assert!(c.kafka_listen_addr().unwrap_err().contains("kafka_listen"));
    }
}
