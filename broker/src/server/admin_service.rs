//! Topics (create, delete, configs, partitions, reassignment, replication factor) and
//! brokers (decommission, rebalance, preferred-leader election), and a replica's stored
//! batches (for repair by another replica).

use std::sync::Arc;

use rafka_proto::v1::{self, admin_server};
use tonic::{Request, Response, Status};

use super::{catalog, Shared};
use crate::error::BrokerError;
use crate::topics::check_not_internal;

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
        check_not_internal(&req.name, "create")?;
        let name = req.name.clone();
        let topic = catalog::create_topic(&self.shared.node, req, &self.shared.config).await?;
        tracing::info!(topic = %name, partitions = topic.partitions.len(), "created topic");
        Ok(Response::new(v1::CreateTopicResponse {
            topic: Some(topic),
        }))
    }

    async fn delete_topic(
        &self,
        request: Request<v1::DeleteTopicRequest>,
    ) -> Result<Response<v1::DeleteTopicResponse>, Status> {
        let name = request.into_inner().name;
        check_not_internal(&name, "delete")?;
        catalog::delete_topic(&self.shared.node, name.clone()).await?;
        tracing::info!(topic = %name, "deleted topic");
        Ok(Response::new(v1::DeleteTopicResponse {}))
    }

    async fn create_partitions(
        &self,
        request: Request<v1::CreatePartitionsRequest>,
    ) -> Result<Response<v1::CreatePartitionsResponse>, Status> {
        let req = request.into_inner();
        check_not_internal(&req.name, "add partitions to")?;
        let topic = catalog::add_partitions(
            &self.shared.node,
            req.name,
            req.partitions,
            &self.shared.config,
        )
        .await?;
        tracing::info!(topic = %topic.name, partitions = topic.partitions.len(), "added partitions");
        Ok(Response::new(v1::CreatePartitionsResponse {
            topic: Some(topic),
        }))
    }

    async fn reassign_partition(
        &self,
        request: Request<v1::ReassignPartitionRequest>,
    ) -> Result<Response<v1::ReassignPartitionResponse>, Status> {
        let req = request.into_inner();
        let topic = catalog::reassign_partition(
            &self.shared.node,
            req.topic,
            req.partition,
            req.replicas.clone(),
        )
        .await?;
        tracing::info!(topic = %topic.name, partition = req.partition, "moving to {:?}", req.replicas);
        Ok(Response::new(v1::ReassignPartitionResponse {
            topic: Some(topic),
        }))
    }

    async fn alter_replication_factor(
        &self,
        request: Request<v1::AlterReplicationFactorRequest>,
    ) -> Result<Response<v1::AlterReplicationFactorResponse>, Status> {
        let req = request.into_inner();
        check_not_internal(&req.name, "change the replication factor of")?;
        let topic =
            catalog::alter_replication_factor(&self.shared.node, req.name, req.replication_factor)
                .await?;
        tracing::info!(topic = %topic.name, rf = req.replication_factor, "changing the replication factor");
        Ok(Response::new(v1::AlterReplicationFactorResponse {
            topic: Some(topic),
        }))
    }

    async fn decommission_broker(
        &self,
        request: Request<v1::DecommissionBrokerRequest>,
    ) -> Result<Response<v1::DecommissionBrokerResponse>, Status> {
        let id = request.into_inner().id;
        let moves = catalog::decommission_broker(&self.shared.node, id).await?;
        tracing::info!(broker = id, partitions = moves.len(), "decommissioning");
        Ok(Response::new(v1::DecommissionBrokerResponse { moves }))
    }

    async fn rebalance(
        &self,
        request: Request<v1::RebalanceRequest>,
    ) -> Result<Response<v1::RebalanceResponse>, Status> {
        let dry_run = request.into_inner().dry_run;
        let moves = catalog::rebalance(&self.shared.node, dry_run).await?;
        if !dry_run {
            tracing::info!(partitions = moves.len(), "rebalancing");
        }
        Ok(Response::new(v1::RebalanceResponse { moves }))
    }

    async fn elect_preferred_leaders(
        &self,
        request: Request<v1::ElectPreferredLeadersRequest>,
    ) -> Result<Response<v1::ElectPreferredLeadersResponse>, Status> {
        let named = request.into_inner().partitions;
        Ok(Response::new(
            catalog::elect_preferred_leaders(&self.shared.node, named).await,
        ))
    }

    async fn read_replica_log(
        &self,
        request: Request<v1::ReadReplicaLogRequest>,
    ) -> Result<Response<v1::ReadReplicaLogResponse>, Status> {
        let req = request.into_inner();
        let p = (self.shared.node.partition(&req.topic, req.partition).await).ok_or_else(|| {
            BrokerError::Unavailable(format!(
                "{}-{}: no replica on this broker",
                req.topic, req.partition
            ))
        })?;
        let hw = p.high_watermark();
        if req.to_offset > hw {
            return Err(BrokerError::Unavailable(format!(
                "{}-{}: offset {} is above this replica's high watermark {hw}",
                req.topic, req.partition, req.to_offset
            ))
            .into());
        }
        let reader = p.reader().clone();
        let (from, to) = (req.from_offset, req.to_offset);
        let records = tokio::task::spawn_blocking(move || {
            reader.read_raw(from, to, crate::log::MAX_RAW_READ)
        })
        .await
        .map_err(|e| BrokerError::Internal(e.to_string()))?
        .map_err(|e| p.log_error(e))?;
        Ok(Response::new(v1::ReadReplicaLogResponse {
            records: records.into(),
        }))
    }

    async fn alter_topic_config(
        &self,
        request: Request<v1::AlterTopicConfigRequest>,
    ) -> Result<Response<v1::AlterTopicConfigResponse>, Status> {
        let req = request.into_inner();
        check_not_internal(&req.name, "alter the config of")?;
        let topic = catalog::alter_topic(
            &self.shared.node,
            req.name,
            req.configs.into_iter().collect(),
        )
        .await?;
        Ok(Response::new(v1::AlterTopicConfigResponse {
            topic: Some(topic),
        }))
    }
}
