//! Connections and topic metadata shared by the producer, consumer and admin.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rafka_proto::v1::admin_client::AdminClient;
use rafka_proto::v1::broker_client::BrokerClient;
use rafka_proto::v1::MetadataRequest;
use tonic::transport::{Channel, Endpoint};

use crate::ClientError;

/// A connection to the cluster and what it has told us about topics.
pub(crate) struct Cluster {
    channel: Channel,
    partitions: RwLock<HashMap<String, u32>>,
}

impl Cluster {
    /// Connects to the first reachable address of a comma-separated `bootstrap` list.
    pub async fn connect(bootstrap: &str) -> Result<Arc<Self>, ClientError> {
        let addresses: Vec<&str> = bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect();
        if addresses.is_empty() {
            return Err(ClientError::InvalidArgument(
                "empty bootstrap address list".into(),
            ));
        }
        let mut last = String::new();
        for addr in &addresses {
            let url = if addr.contains("://") {
                addr.to_string()
            } else {
                format!("http://{addr}")
            };
            let endpoint = match Endpoint::from_shared(url) {
                Ok(e) => e,
                Err(e) => {
                    last = format!("bad address `{addr}`: {e}");
                    continue;
                }
            };
            let endpoint = endpoint
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(5))
                .initial_stream_window_size(Some(8 << 20))
                .initial_connection_window_size(Some(32 << 20));
            match endpoint.connect().await {
                Ok(channel) => {
                    return Ok(Arc::new(Self {
                        channel,
                        partitions: RwLock::new(HashMap::new()),
                    }))
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(ClientError::Connect {
            addresses: addresses.join(","),
            reason: last,
        })
    }

    /// A client of the Broker service.
    pub fn broker(&self) -> BrokerClient<Channel> {
        BrokerClient::new(self.channel.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    /// A client of the Admin service.
    pub fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel.clone())
    }

    /// Number of partitions of `topic`, from cached metadata or the cluster.
    pub async fn partition_count(&self, topic: &str) -> Result<u32, ClientError> {
        if let Some(n) = self.read().get(topic) {
            return Ok(*n);
        }
        self.refresh(topic).await
    }

    /// Asks the cluster for `topic`'s metadata again.
    pub async fn refresh(&self, topic: &str) -> Result<u32, ClientError> {
        let resp = self
            .broker()
            .metadata(MetadataRequest {
                topics: vec![topic.to_string()],
            })
            .await?
            .into_inner();
        let count = resp
            .topics
            .iter()
            .find(|t| t.name == topic)
            .map(|t| t.partitions.len() as u32)
            .ok_or_else(|| ClientError::Broker {
                code: tonic::Code::NotFound,
                message: format!("unknown topic `{topic}`"),
            })?;
        self.partitions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.to_string(), count);
        Ok(count)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, u32>> {
        self.partitions.read().unwrap_or_else(|e| e.into_inner())
    }
}
