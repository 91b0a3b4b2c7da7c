//! `rafka acl add|list|remove`: the cluster's access control entries.

use anyhow::bail;
use rafka_proto::v1::AclEntry;

use super::Connection;

/// `rafka acl ...`
#[derive(clap::Subcommand)]
pub enum AclCommand {
    /// Allow (or with --deny, deny) operations to a principal.
    Add(EntryArgs),
    /// Remove entries (the same flags as they were added with).
    Remove(EntryArgs),
    /// List entries.
    List {
        /// Only this principal's (`User:alice`, `Role:readers`).
        #[arg(long)]
        principal: Option<String>,
        /// Only entries on topics, groups or the cluster.
        #[arg(long)]
        resource_type: Option<String>,
    },
}

/// The entries `add` and `remove` name: one per operation.
#[derive(clap::Args)]
pub struct EntryArgs {
    /// `User:<sub>` (`User:*`: every authenticated principal) or `Role:<role>`.
    #[arg(long)]
    principal: String,
    /// A topic (`*`: all).
    #[arg(long, group = "resource")]
    topic: Option<String>,
    /// A consumer group (`*`: all).
    #[arg(long, group = "resource")]
    group: Option<String>,
    /// The cluster (topic creation, partition moves, brokers, ACLs).
    #[arg(long, group = "resource")]
    cluster: bool,
    /// The topic or group name is a prefix.
    #[arg(long)]
    prefixed: bool,
    /// Operations, comma-separated: read, write, create, delete, alter, describe, all.
    #[arg(long, value_delimiter = ',', required = true)]
    operation: Vec<String>,
    /// Deny instead of allow (a deny wins over any allow).
    #[arg(long)]
    deny: bool,
}

impl EntryArgs {
    fn entries(&self) -> anyhow::Result<Vec<AclEntry>> {
        let (resource_type, name) = match (&self.topic, &self.group, self.cluster) {
            (Some(t), None, false) => ("topic", t.clone()),
            (None, Some(g), false) => ("group", g.clone()),
            (None, None, true) => ("cluster", String::new()),
            _ => bail!("name one resource: --topic NAME, --group NAME or --cluster"),
        };
        Ok(self
            .operation
            .iter()
            .map(|op| AclEntry {
                principal: self.principal.clone(),
                resource_type: resource_type.into(),
                pattern: if self.prefixed { "prefixed" } else { "literal" }.into(),
                name: name.clone(),
                operation: op.trim().to_string(),
                permission: if self.deny { "deny" } else { "allow" }.into(),
            })
            .collect())
    }
}

fn show(e: &AclEntry) -> String {
    let resource = match e.resource_type.as_str() {
        "cluster" => "cluster".to_string(),
        t if e.pattern == "prefixed" => format!("{t} {}*", e.name),
        t => format!("{t} {}", e.name),
    };
    format!(
        "{:<5}  {:<24}  {:<8}  {resource}",
        e.permission, e.principal, e.operation
    )
}

/// Runs `rafka acl ...`.
pub async fn acl(conn: &Connection, cmd: AclCommand) -> anyhow::Result<()> {
    let admin = conn.admin().await?;
    match cmd {
        AclCommand::Add(args) => {
            let entries = args.entries()?;
            let n = entries.len();
            admin.create_acls(entries).await?;
            println!("added {n} ACL entr{}", if n == 1 { "y" } else { "ies" });
        }
        AclCommand::Remove(args) => {
            let n = admin.delete_acls(args.entries()?).await?;
            println!("removed {n} ACL entr{}", if n == 1 { "y" } else { "ies" });
        }
        AclCommand::List {
            principal,
            resource_type,
        } => {
            let entries = admin
                .list_acls(
                    principal.as_deref().unwrap_or(""),
                    resource_type.as_deref().unwrap_or(""),
                )
                .await?;
            for e in &entries {
                println!("{}", show(e));
            }
        }
    }
    Ok(())
}
