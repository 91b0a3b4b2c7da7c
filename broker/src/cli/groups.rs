//! `rafka group list|describe|reset-offsets|delete`.

use std::collections::BTreeMap;

use anyhow::bail;
use rafka_client::{Admin, TopicPartition};
use rafka_proto::v1::list_offsets_request::Spec;

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

pub async fn group(bootstrap: &str, cmd: GroupCommand) -> anyhow::Result<()> {
    let admin = Admin::connect(bootstrap).await?;
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
            let spec = match (to_earliest, to_latest, to_offset, to_timestamp) {
                (true, ..) => Some(Spec::Earliest(true)),
                (_, true, ..) => Some(Spec::Latest(true)),
                (.., Some(ts)) => Some(Spec::Timestamp(ts)),
                (_, _, Some(_), _) => None,
                _ => {
                    bail!("say where to: --to-earliest, --to-latest, --to-offset or --to-timestamp")
                }
            };
            let described = admin.describe_group(&group).await?;
            if !described.members.is_empty() {
                bail!(
                    "group {group} has {} active member(s); stop them first",
                    described.members.len()
                );
            }
            let count = admin
                .describe_topics(&[&topic])
                .await?
                .first()
                .map_or(0, |t| t.partitions.len() as u32);
            let mut offsets = BTreeMap::new();
            for p in 0..count {
                let offset = match (&spec, to_offset) {
                    (Some(spec), _) => {
                        let r = admin.list_offset(&topic, p, *spec).await?;
                        r.offset.unwrap_or(r.high_watermark)
                    }
                    (None, Some(o)) => o,
                    (None, None) => unreachable!("checked above"),
                };
                offsets.insert(TopicPartition::new(topic.clone(), p), offset);
            }
            admin.set_group_offsets(&group, &offsets).await?;
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
    let mut owner = BTreeMap::new();
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
        for a in &m.assignment {
            owner.insert((a.topic.clone(), a.partition), m.member_id.clone());
        }
    }
    println!(
        "  {:<28} {:>12} {:>12} {:>10}  member",
        "topic-partition", "committed", "end", "lag"
    );
    for o in &d.offsets {
        let end = admin
            .list_offset(&o.topic, o.partition, Spec::Latest(true))
            .await?
            .high_watermark;
        println!(
            "  {:<28} {:>12} {:>12} {:>10}  {}",
            format!("{}-{}", o.topic, o.partition),
            o.offset,
            end,
            end.saturating_sub(o.offset),
            owner
                .get(&(o.topic.clone(), o.partition))
                .map_or("-", String::as_str)
        );
    }
    Ok(())
}
