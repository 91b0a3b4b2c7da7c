//! Topics (create, delete, configs, partitions, reassignment, replication factor) and
//! brokers (decommission, rebalance, preferred-leader election), and a replica's stored
//! batches (for repair by another replica).

use std::sync::Arc;

use rafka_proto::v1::{self, admin_server};
use tonic::{Request, Response, Status};

use super::{catalog, Shared};
use crate::auth::acl::{Operation, ResourceType};
use crate::auth::issuer;
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

impl AdminService {
    /// Refuses a cluster change (partition moves, brokers, leaders) without Alter on
    /// the cluster.
    fn may_alter_cluster<T>(&self, request: &Request<T>) -> Result<(), BrokerError> {
        self.shared.authorize(
            super::principal(request).as_ref(),
            Operation::Alter,
            ResourceType::Cluster,
            "",
        )
    }
}

#[tonic::async_trait]
impl admin_server::Admin for AdminService {
    async fn create_topic(
        &self,
        request: Request<v1::CreateTopicRequest>,
    ) -> Result<Response<v1::CreateTopicResponse>, Status> {
        let who = super::principal(&request);
        let req = request.into_inner();
        check_not_internal(&req.name, "create")?;
        // Create on the topic, or on the cluster (any topic), as Kafka has it.
        if self
            .shared
            .authorize(who.as_ref(), Operation::Create, ResourceType::Cluster, "")
            .is_err()
        {
            self.shared
                .may_topic(who.as_ref(), Operation::Create, &req.name)?;
        }
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
        let who = super::principal(&request);
        let name = request.into_inner().name;
        check_not_internal(&name, "delete")?;
        self.shared
            .may_topic(who.as_ref(), Operation::Delete, &name)?;
        catalog::delete_topic(&self.shared.node, name.clone()).await?;
        tracing::info!(topic = %name, "deleted topic");
        Ok(Response::new(v1::DeleteTopicResponse {}))
    }

    async fn create_partitions(
        &self,
        request: Request<v1::CreatePartitionsRequest>,
    ) -> Result<Response<v1::CreatePartitionsResponse>, Status> {
        let who = super::principal(&request);
        let req = request.into_inner();
        check_not_internal(&req.name, "add partitions to")?;
        self.shared
            .may_topic(who.as_ref(), Operation::Alter, &req.name)?;
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
        self.may_alter_cluster(&request)?;
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
        self.may_alter_cluster(&request)?;
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
        self.may_alter_cluster(&request)?;
        let id = request.into_inner().id;
        let moves = catalog::decommission_broker(&self.shared.node, id).await?;
        tracing::info!(broker = id, partitions = moves.len(), "decommissioning");
        Ok(Response::new(v1::DecommissionBrokerResponse { moves }))
    }

    async fn rebalance(
        &self,
        request: Request<v1::RebalanceRequest>,
    ) -> Result<Response<v1::RebalanceResponse>, Status> {
        self.may_alter_cluster(&request)?;
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
        self.may_alter_cluster(&request)?;
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
        let who = super::principal(&request);
        let req = request.into_inner();
        check_not_internal(&req.name, "alter the config of")?;
        self.shared
            .may_topic(who.as_ref(), Operation::Alter, &req.name)?;
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

    async fn create_acls(
        &self,
        request: Request<v1::CreateAclsRequest>,
    ) -> Result<Response<v1::CreateAclsResponse>, Status> {
        self.may_alter_cluster(&request)?;
        let acls = entries(&request.into_inner().acls)?;
        let n = acls.len();
        self.shared
            .node
            .propose(&crate::cluster::Command::CreateAcls { acls })
            .await?;
        tracing::info!(entries = n, "ACL entries added");
        Ok(Response::new(v1::CreateAclsResponse {}))
    }

    async fn delete_acls(
        &self,
        request: Request<v1::DeleteAclsRequest>,
    ) -> Result<Response<v1::DeleteAclsResponse>, Status> {
        self.may_alter_cluster(&request)?;
        let acls = entries(&request.into_inner().acls)?;
        let before = self
            .shared
            .node
            .with_state(|s| acls.iter().filter(|a| s.acls.contains(a)).count());
        self.shared
            .node
            .propose(&crate::cluster::Command::DeleteAcls { acls })
            .await?;
        tracing::info!(entries = before, "ACL entries removed");
        Ok(Response::new(v1::DeleteAclsResponse {
            deleted: before as u32,
        }))
    }

    async fn list_acls(
        &self,
        request: Request<v1::ListAclsRequest>,
    ) -> Result<Response<v1::ListAclsResponse>, Status> {
        self.shared.authorize(
            super::principal(&request).as_ref(),
            Operation::Describe,
            ResourceType::Cluster,
            "",
        )?;
        let req = request.into_inner();
        let ty: Option<ResourceType> = match req.resource_type.as_str() {
            "" => None,
            t => Some(t.parse().map_err(BrokerError::InvalidRequest)?),
        };
        let acls = self.shared.node.with_state(|s| {
            s.acls
                .iter()
                .filter(|a| req.principal.is_empty() || a.principal == req.principal)
                .filter(|a| ty.is_none_or(|t| a.resource_type == t))
                .map(crate::auth::acl::AclEntry::to_proto)
                .collect()
        });
        Ok(Response::new(v1::ListAclsResponse { acls }))
    }

    async fn create_client(
        &self,
        request: Request<v1::CreateClientRequest>,
    ) -> Result<Response<v1::CreateClientResponse>, Status> {
        self.may_alter_cluster(&request)?;
        let req = request.into_inner();
        let roles_ok =
            req.roles.len() <= 64 && req.roles.iter().all(|r| !r.is_empty() && r.len() <= 255);
        if !roles_ok {
            return Err(
                BrokerError::InvalidRequest("at most 64 roles of 1 to 255 bytes".into()).into(),
            );
        }
        if self
            .shared
            .node
            .with_state(|s| s.oauth_clients.contains_key(&req.id))
        {
            return Err(BrokerError::InvalidRequest(format!(
                "client `{}` exists already",
                crate::error::shown(&req.id)
            ))
            .into());
        }
        let secret = issuer::new_secret().map_err(BrokerError::Internal)?;
        let hashed = secret.clone();
        let secret_hash = tokio::task::spawn_blocking(move || issuer::hash_secret(&hashed))
            .await
            .map_err(|e| BrokerError::Internal(e.to_string()))?
            .map_err(BrokerError::Internal)?;
        self.shared
            .node
            .propose(&crate::cluster::Command::CreateOAuthClient {
                id: req.id.clone(),
                client: issuer::OAuthClient {
                    secret_hash,
                    roles: req.roles,
                },
            })
            .await?;
        // The command may have been refused (the id taken): it is ours if the hash is.
        let ours = self
            .shared
            .node
            .with_state(|s| s.oauth_clients.contains_key(&req.id));
        if !ours {
            return Err(BrokerError::InvalidRequest(format!(
                "client `{}` was not created",
                crate::error::shown(&req.id)
            ))
            .into());
        }
        tracing::info!(client = %crate::error::shown(&req.id), "OAuth client created");
        Ok(Response::new(v1::CreateClientResponse { secret }))
    }

    async fn delete_client(
        &self,
        request: Request<v1::DeleteClientRequest>,
    ) -> Result<Response<v1::DeleteClientResponse>, Status> {
        self.may_alter_cluster(&request)?;
        let id = request.into_inner().id;
        if !self
            .shared
            .node
            .with_state(|s| s.oauth_clients.contains_key(&id))
        {
            return Err(BrokerError::InvalidRequest(format!(
                "no client `{}`",
                crate::error::shown(&id)
            ))
            .into());
        }
        self.shared
            .node
            .propose(&crate::cluster::Command::DeleteOAuthClient { id: id.clone() })
            .await?;
        tracing::info!(client = %crate::error::shown(&id), "OAuth client deleted");
        Ok(Response::new(v1::DeleteClientResponse {}))
    }

    async fn list_clients(
        &self,
        request: Request<v1::ListClientsRequest>,
    ) -> Result<Response<v1::ListClientsResponse>, Status> {
        self.shared.authorize(
            super::principal(&request).as_ref(),
            Operation::Describe,
            ResourceType::Cluster,
            "",
        )?;
        let clients = self.shared.node.with_state(|s| {
            s.oauth_clients
                .iter()
                .map(|(id, c)| v1::ClientInfo {
                    id: id.clone(),
                    roles: c.roles.clone(),
                })
                .collect()
        });
        Ok(Response::new(v1::ListClientsResponse { clients }))
    }

    async fn rotate_signing_key(
        &self,
        request: Request<v1::RotateSigningKeyRequest>,
    ) -> Result<Response<v1::RotateSigningKeyResponse>, Status> {
        self.may_alter_cluster(&request)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let key = issuer::SigningKey::generate(now).map_err(BrokerError::Internal)?;
        let kid = key.kid.clone();
        let keep_ms = (self.shared.config.auth.token_ttl_secs as i64).saturating_mul(1000);
        self.shared
            .node
            .propose(&crate::cluster::Command::AddSigningKey { key, keep_ms })
            .await?;
        tracing::info!(kid, "token signing key rotated");
        Ok(Response::new(v1::RotateSigningKeyResponse { kid }))
    }
}

/// Entries of a request, each checked; the error names the first bad one.
fn entries(acls: &[v1::AclEntry]) -> Result<Vec<crate::auth::acl::AclEntry>, BrokerError> {
    if acls.is_empty() {
        return Err(BrokerError::InvalidRequest("no ACL entries given".into()));
    }
    acls.iter()
        .enumerate()
        .map(|(i, e)| {
            crate::auth::acl::AclEntry::from_proto(e)
                .map_err(|m| BrokerError::InvalidRequest(format!("ACL entry {i}: {m}")))
        })
        .collect()
}
