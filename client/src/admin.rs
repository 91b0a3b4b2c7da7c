//! Topics, configs and cluster metadata.

use std::collections::BTreeMap;
use std::sync::Arc;

use rafka_proto::v1;

use crate::cluster::Cluster;
use crate::ClientError;

/// A topic as the cluster describes it.
pub type TopicDescription = v1::TopicInfo;

/// Administrative operations.
#[derive(Clone)]
pub struct Admin {
    cluster: Arc<Cluster>,
}

impl Admin {
    /// Connects to the cluster through a comma-separated bootstrap list.
    pub async fn connect(bootstrap: &str) -> Result<Self, ClientError> {
        Ok(Self {
            cluster: Cluster::connect(bootstrap).await?,
        })
    }

    /// Creates a topic with per-topic configs (Kafka names: `retention.ms`, `flush`, ...).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicDescription, ClientError> {
        let resp = self
            .cluster
            .admin()
            .create_topic(v1::CreateTopicRequest {
                name: name.to_string(),
                partitions,
                replication_factor,
                configs: configs.into_iter().collect(),
            })
            .await?
            .into_inner();
        resp.topic
            .ok_or_else(|| ClientError::InvalidArgument("broker returned no topic".into()))
    }

    /// Deletes a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        self.cluster
            .admin()
            .delete_topic(v1::DeleteTopicRequest {
                name: name.to_string(),
            })
            .await?;
        Ok(())
    }

    /// Changes topic configs.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicDescription, ClientError> {
        let resp = self
            .cluster
            .admin()
            .alter_topic_config(v1::AlterTopicConfigRequest {
                name: name.to_string(),
                configs: configs.into_iter().collect(),
            })
            .await?
            .into_inner();
        resp.topic
            .ok_or_else(|| ClientError::InvalidArgument("broker returned no topic".into()))
    }

    /// Every topic (or those named), with partitions and configs.
    pub async fn describe_topics(
        &self,
        names: &[&str],
    ) -> Result<Vec<TopicDescription>, ClientError> {
        Ok(self.metadata(names).await?.topics)
    }

    /// Brokers, controller and topics.
    pub async fn metadata(&self, topics: &[&str]) -> Result<v1::MetadataResponse, ClientError> {
        Ok(self
            .cluster
            .broker()
            .metadata(v1::MetadataRequest {
                topics: topics.iter().map(|t| t.to_string()).collect(),
            })
            .await?
            .into_inner())
    }
}
