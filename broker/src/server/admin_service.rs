//! CreateTopic, DeleteTopic and AlterTopicConfig.

use std::sync::Arc;

use rafka_proto::v1::{self, admin_server};
use tonic::{Request, Response, Status};

use super::broker_service::topic_info;
use super::Shared;
use crate::error::BrokerError;

pub(crate) struct AdminService {
    shared: Arc<Shared>,
}

impl AdminService {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[tonic::async_trait]
impl admin_server::Admin for AdminService {
    async fn create_topic(
        &self,
        request: Request<v1::CreateTopicRequest>,
    ) -> Result<Response<v1::CreateTopicResponse>, Status> {
        let req = request.into_inner();
        let brokers = 1;
        if req.replication_factor > brokers {
            return Err(BrokerError::InvalidRequest(format!(
                "replication factor {} exceeds the {brokers} available broker(s)",
                req.replication_factor
            ))
            .into());
        }
        let partitions = match req.partitions {
            0 => self.shared.config.default_partitions,
            n => n,
        };
        let topic = self
            .shared
            .registry
            .create(&req.name, partitions, req.configs.into_iter().collect())
            .await?;
        tracing::info!(topic = %req.name, partitions, "created topic");
        Ok(Response::new(v1::CreateTopicResponse {
            topic: Some(topic_info(&topic, self.shared.config.node_id)),
        }))
    }

    async fn delete_topic(
        &self,
        request: Request<v1::DeleteTopicRequest>,
    ) -> Result<Response<v1::DeleteTopicResponse>, Status> {
        let name = request.into_inner().name;
        self.shared.registry.delete(&name).await?;
        tracing::info!(topic = %name, "deleted topic");
        Ok(Response::new(v1::DeleteTopicResponse {}))
    }

    async fn alter_topic_config(
        &self,
        request: Request<v1::AlterTopicConfigRequest>,
    ) -> Result<Response<v1::AlterTopicConfigResponse>, Status> {
        let req = request.into_inner();
        let topic = self
            .shared
            .registry
            .alter(&req.name, req.configs.into_iter().collect())
            .await?;
        Ok(Response::new(v1::AlterTopicConfigResponse {
            topic: Some(topic_info(&topic, self.shared.config.node_id)),
        }))
    }
}
