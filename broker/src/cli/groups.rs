//! `rafka group list|describe|reset-offsets|delete`.

use anyhow::bail;
use rafka_client::{Admin, ResetTo};

/// `rafka group ...`
#[derive(clap::Subcommand)]
pub enum GroupCommand {
    /// Every consumer group with members or committed offsets.
    List,
    /// Members, assignment, and per partition the committed offset, end offset and lag.
    Describe {
        /// Group id.
        group: String,
    },
    /// Moves a group's committed offsets for a topic (refused while it has members).
    ResetOffsets {
        /// Group id.
        group: String,
        /// Topic whose partitions are reset.
        #[arg(long)]
        topic: String,
        /// To each partition's oldest record.
        #[arg(long, group = "to")]
        to_earliest: bool,
        /// To each partition's end.
        #[arg(long, group = "to")]
        to_latest: bool,
        /// To this offset in every partition.
        #[arg(long, group = "to")]
        to_offset: Option<u64>,
        /// To the first record at or after this time (ms since the epoch).
        #[arg(long, group = "to")]
        to_timestamp: Option<i64>,
    },
    /// Forgets a group's committed offsets (refused while it has members).
    Delete {
        /// Group id.
        group: String,
    },
}

pub async fn group(conn: &super::Connection, cmd: GroupCommand) -> anyhow::Result<()> {
    let admin = conn.admin().await?;
    match cmd {
        GroupCommand::List => {
            for g in admin.list_groups().await? {
                println!("{g}");
            }
        }
        GroupCommand::Describe { group } => describe(&admin, &group).await?,
        GroupCommand::ResetOffsets {
            group,
            topic,
            to_earliest,
            to_latest,
            to_offset,
            to_timestamp,
        } => {
            let to = match (to_earliest, to_latest, to_offset, to_timestamp) {
                (true, ..) => ResetTo::Earliest,
                (_, true, ..) => ResetTo::Latest,
                (.., Some(ts)) => ResetTo::Timestamp(ts),
                (_, _, Some(o), _) => ResetTo::Offset(o),
                _ => {
                    bail!("say where to: --to-earliest, --to-latest, --to-offset or --to-timestamp")
                }
            };
            let offsets = admin.reset_group_offsets(&group, &topic, to).await?;
            for (tp, o) in &offsets {
                println!("{}-{}  {o}", tp.topic, tp.partition);
            }
        }
        GroupCommand::Delete { group } => {
            admin.delete_group(&group).await?;
            println!("deleted group {group}");
        }
    }
    Ok(())
}

async fn describe(admin: &Admin, group: &str) -> anyhow::Result<()> {
    let d = admin.describe_group(group).await?;
    println!(
        "group {}  state {}  epoch {}  members {}",
        d.group,
        d.state,
        d.epoch,
        d.members.len()
    );
    for m in &d.members {
        let instance = if m.instance_id.is_empty() {
            String::new()
        } else {
            format!(" (instance {})", m.instance_id)
        };
        println!(
            "  member {}{instance}: {} partition(s)",
            m.member_id,
            m.assignment.len()
        );
    }
    println!(
        "  {:<28} {:>12} {:>12} {:>10}  member",
        "topic-partition", "committed", "end", "lag"
    );
    for p in admin.group_lag(group).await? {
        println!(
            "  {:<28} {:>12} {:>12} {:>10}  {}",
            format!("{}-{}", p.topic, p.partition),
            p.committed,
            p.end,
            p.lag,
            p.member.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
