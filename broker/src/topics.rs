//! The topics this broker holds: partitions on disk, configs in `<data>/topics/<name>.toml`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::config::{apply_topic_configs, topic_config_map};
use crate::error::{shown, BrokerError};
use crate::log::LogConfig;
use crate::partition::Partition;

/// Names starting with this are reserved for the broker's internal topics
/// (`__consumer_offsets`): clients may read them, but not create, delete, alter or
/// produce to them.
pub const INTERNAL_PREFIX: &str = "__";

/// True for an internal topic's name (see [`INTERNAL_PREFIX`]).
pub fn is_internal(name: &str) -> bool {
    name.starts_with(INTERNAL_PREFIX)
}

/// Refuses a client's `action` on an internal topic.
pub fn check_not_internal(name: &str, action: &'static str) -> Result<(), BrokerError> {
    if is_internal(name) {
        return Err(BrokerError::InternalTopic {
            topic: name.to_string(),
            action,
        });
    }
    Ok(())
}

/// Most partitions one topic may ever have, whatever the config says: a sanity bound on
/// one metadata command. The configured limits (`max_partitions_per_topic`,
/// `max_partitions`) are checked where a request enters.
pub const MAX_PARTITIONS: u32 = 1_000_000;

/// A topic and its partitions.
pub struct Topic {
    name: Arc<str>,
    overrides: BTreeMap<String, String>,
    config: LogConfig,
    partitions: Vec<Arc<Partition>>,
}

impl Topic {
    /// Topic name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The partitions, by number.
    pub fn partitions(&self) -> &[Arc<Partition>] {
        &self.partitions
    }

    /// One partition, or the error a client should see.
    pub fn partition(&self, id: u32) -> Result<&Arc<Partition>, BrokerError> {
        self.partitions
            .get(id as usize)
            .ok_or_else(|| BrokerError::UnknownPartition {
                topic: self.name.to_string(),
                partition: id,
                count: self.partitions.len() as u32,
            })
    }

    /// Effective settings.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Effective settings by Kafka name.
    pub fn config_map(&self) -> BTreeMap<String, String> {
        topic_config_map(&self.config)
    }
}

/// What `<data>/topics/<name>.toml` holds.
#[derive(Serialize, Deserialize)]
struct TopicFile {
    partitions: u32,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

/// All topics of this broker.
pub struct TopicRegistry {
    data_dir: PathBuf,
    defaults: LogConfig,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Serialises create, delete and alter.
    admin: tokio::sync::Mutex<()>,
}

/// Checks a topic name: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..` (as Kafka).
pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(BrokerError::InvalidRequest(format!(
            "invalid topic name `{}`: use 1 to 249 of [a-zA-Z0-9._-], not `.` or `..`",
            shown(name)
        )))
    }
}

fn internal(what: &str, path: &Path, e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Internal(format!("{what} {}: {e}", path.display()))
}

impl TopicRegistry {
    /// Loads every topic under `data_dir`, opening (and recovering) its partition logs.
    pub async fn open(data_dir: &Path, defaults: LogConfig) -> Result<Self, BrokerError> {
        let meta = data_dir.join("topics");
        std::fs::create_dir_all(&meta).map_err(|e| internal("cannot create", &meta, e))?;
        let registry = Self {
            data_dir: data_dir.to_path_buf(),
            defaults,
            topics: RwLock::new(HashMap::new()),
            admin: tokio::sync::Mutex::new(()),
        };
        let entries = std::fs::read_dir(&meta).map_err(|e| internal("cannot list", &meta, e))?;
        for entry in entries {
            let path = entry.map_err(|e| internal("cannot list", &meta, e))?.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".toml"))
            else {
                continue;
            };
            let text =
                std::fs::read_to_string(&path).map_err(|e| internal("cannot read", &path, e))?;
            let file: TopicFile =
                toml::from_str(&text).map_err(|e| internal("bad topic file", &path, e))?;
            let topic = registry
                .open_topic(name, file.partitions, file.configs)
                .await?;
            registry.write().insert(name.to_string(), topic);
        }
        Ok(registry)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Topic>>> {
        self.topics.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Topic>>> {
        self.topics.write().unwrap_or_else(|e| e.into_inner())
    }

    fn partition_dir(&self, topic: &str, partition: u32) -> PathBuf {
        self.data_dir.join(format!("{topic}-{partition}"))
    }

    async fn open_topic(
        &self,
        name: &str,
        partitions: u32,
        overrides: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, BrokerError> {
        let config = apply_topic_configs(&self.defaults, &overrides)
            .map_err(|e| BrokerError::InvalidRequest(format!("topic `{name}`: {e}")))?;
        let name: Arc<str> = name.into();
        let opens = (0..partitions).map(|p| {
            Partition::open(
                name.clone(),
                p,
                self.partition_dir(&name, p),
                config.clone(),
            )
        });
        let partitions = futures::future::try_join_all(opens).await?;
        Ok(Arc::new(Topic {
            name,
            overrides,
            config,
            partitions,
        }))
    }

    /// The topic called `name`.
    pub fn get(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        self.read()
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))
    }

    /// Every topic, sorted by name.
    pub fn list(&self) -> Vec<Arc<Topic>> {
        let mut v: Vec<_> = self.read().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Creates a topic: validates the request, opens its partitions, then records it.
    pub async fn create(
        &self,
        name: &str,
        partitions: u32,
        overrides: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, BrokerError> {
        validate_topic_name(name)?;
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(BrokerError::InvalidRequest(format!(
                "partitions must be between 1 and {MAX_PARTITIONS}, not {partitions}"
            )));
        }
        let _guard = self.admin.lock().await;
        if self.read().contains_key(name) {
            return Err(BrokerError::TopicExists(name.to_string()));
        }
        // Leftovers of a topic deleted while the broker was down must not leak into this one.
        for p in 0..partitions {
            let dir = self.partition_dir(name, p);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| internal("cannot clear", &dir, e))?;
            }
        }
        let topic = self.open_topic(name, partitions, overrides).await?;
        self.save(&topic)?;
        self.write().insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    /// Replaces a topic's config overrides (merged into the existing ones).
    pub async fn alter(
        &self,
        name: &str,
        changes: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, BrokerError> {
        let _guard = self.admin.lock().await;
        let old = self.get(name)?;
        let mut overrides = old.overrides.clone();
        overrides.extend(changes);
        let config = apply_topic_configs(&self.defaults, &overrides)
            .map_err(|e| BrokerError::InvalidRequest(format!("topic `{name}`: {e}")))?;
        for p in &old.partitions {
            let c = config.clone();
            p.with_log(move |log| log.set_config(c)).await?;
        }
        let topic = Arc::new(Topic {
            name: old.name.clone(),
            overrides,
            config,
            partitions: old.partitions.clone(),
        });
        self.save(&topic)?;
        self.write().insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    /// Deletes a topic and its data. Readers already holding its partitions finish from
    /// the mappings they have.
    pub async fn delete(&self, name: &str) -> Result<(), BrokerError> {
        let _guard = self.admin.lock().await;
        let topic = self.get(name)?;
        let file = self.data_dir.join("topics").join(format!("{name}.toml"));
        std::fs::remove_file(&file).map_err(|e| internal("cannot remove", &file, e))?;
        self.write().remove(name);
        for p in topic.partitions() {
            let dir = p.dir().to_path_buf();
            tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir))
                .await
                .map_err(|e| BrokerError::Internal(e.to_string()))?
                .map_err(|e| internal("cannot remove", p.dir(), e))?;
        }
        Ok(())
    }

    fn save(&self, topic: &Topic) -> Result<(), BrokerError> {
        let file = TopicFile {
            partitions: topic.partitions.len() as u32,
            configs: topic.overrides.clone(),
        };
        let dir = self.data_dir.join("topics");
        let path = dir.join(format!("{}.toml", topic.name));
        let tmp = dir.join(format!("{}.toml.tmp", topic.name));
        let text = toml::to_string(&file).map_err(|e| internal("cannot encode", &path, e))?;
        let write = || -> std::io::Result<()> {
            std::fs::write(&tmp, text)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&dir)?.sync_all()
        };
        write().map_err(|e| internal("cannot write", &path, e))
    }

    /// Forces every partition's data to disk (at shutdown).
    pub async fn flush_all(&self) -> Result<(), BrokerError> {
        for topic in self.list() {
            for p in topic.partitions() {
                p.with_log(|log| log.flush()).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_names_are_refused_to_clients() {
        assert!(is_internal("__consumer_offsets"));
        assert!(is_internal("__anything"));
        assert!(!is_internal("_schemas") && !is_internal("orders"));
        let err = check_not_internal("__consumer_offsets", "delete").unwrap_err();
        assert!(matches!(err, BrokerError::InternalTopic { .. }));
        assert!(
            err.to_string().contains("clients cannot delete it"),
            "{err}"
        );
        assert!(check_not_internal("orders", "delete").is_ok());
    }
}
