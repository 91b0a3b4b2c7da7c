//! Unit tests of the metadata state machine.

use super::*;

fn cluster(n: u32) -> ClusterState {
    let mut s = ClusterState::default();
    for id in 1..=n {
        s.apply(&Command::RegisterBroker {
            id,
            address: format!("127.0.0.1:{}", 9000 + id),
        })
        .unwrap();
    }
    s
}

fn create(name: &str, partitions: u32, rf: u32) -> Command {
    Command::CreateTopic {
        name: name.into(),
        partitions,
        replication_factor: rf,
        configs: BTreeMap::new(),
    }
}

#[test]
fn topics_get_unique_groups_and_spread_replicas() {
    let mut s = cluster(3);
    s.apply(&create("a", 6, 3)).unwrap();
    s.apply(&create("b", 4, 2)).unwrap();
    let groups: Vec<u64> = s
        .topics
        .values()
        .flat_map(|t| t.partitions.iter().map(|p| p.group))
        .collect();
    assert_eq!(groups.len(), 10);
    assert!(
        groups.iter().all(|&g| g > 0),
        "group 0 is the metadata group"
    );
    let mut sorted = groups.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 10);
    // Every broker leads some partitions and holds its share of replicas.
    for b in 1..=3 {
        let on = s.replicas_on(b);
        assert!(on.len() >= 5, "broker {b} holds {}", on.len());
        assert!(on.iter().any(|(_, _, p)| p.replicas[0] == b));
    }
    assert_eq!(
        s.apply(&create("a", 1, 1)),
        Err(MetadataError::TopicExists("a".into()))
    );
    let before = s.clone();
    assert!(matches!(
        s.apply(&create("c", 1, 4)),
        Err(MetadataError::Placement(_))
    ));
    assert_eq!(s, before, "a failed command changes nothing");
    for bad in [
        create("../escape", 1, 1),
        create("ok", crate::topics::MAX_PARTITIONS + 1, 1),
        Command::CreateTopic {
            name: "cfg".into(),
            partitions: 1,
            replication_factor: 1,
            configs: BTreeMap::from([("cleanup.policy".into(), "compact".into())]),
        },
        Command::AlterTopicConfig {
            name: "a".into(),
            configs: BTreeMap::from([("flush".into(), "never".into())]),
        },
    ] {
        assert!(
            matches!(s.apply(&bad), Err(MetadataError::Invalid(_))),
            "{bad:?}"
        );
        assert_eq!(s, before, "{bad:?} changed the state");
    }
    // Deleted topics' groups are never handed out again.
    s.apply(&Command::DeleteTopic { name: "b".into() }).unwrap();
    s.apply(&create("c", 1, 1)).unwrap();
    assert!(s.topics["c"].partitions[0].group > *groups.iter().max().unwrap());
}

#[test]
fn added_partitions_keep_the_topics_replication_and_get_new_groups() {
    let mut s = cluster(3);
    s.apply(&create("a", 2, 3)).unwrap();
    let before = s.clone();
    for bad in [
        Command::AddPartitions {
            name: "a".into(),
            partitions: 2,
        },
        Command::AddPartitions {
            name: "missing".into(),
            partitions: 9,
        },
        Command::AddPartitions {
            name: "a".into(),
            partitions: crate::topics::MAX_PARTITIONS + 1,
        },
    ] {
        assert!(s.apply(&bad).is_err(), "{bad:?}");
        assert_eq!(s, before, "{bad:?} changed the state");
    }
    s.apply(&Command::AddPartitions {
        name: "a".into(),
        partitions: 5,
    })
    .unwrap();
    let t = &s.topics["a"];
    assert_eq!(
        t.partitions[..2],
        before.topics["a"].partitions[..],
        "old ones kept"
    );
    assert_eq!(t.partitions.len(), 5);
    assert!(t.partitions.iter().all(|p| p.replicas.len() == 3));
    let mut groups: Vec<u64> = t.partitions.iter().map(|p| p.group).collect();
    groups.dedup();
    assert_eq!(groups.len(), 5);
    assert!(groups[2] >= before.next_group);
}

#[test]
fn a_move_runs_on_both_sets_until_completed_with_its_target() {
    let mut s = cluster(4);
    s.apply(&create("m", 1, 2)).unwrap();
    let from = s.topics["m"].partitions[0].replicas.clone();
    let to: Vec<u32> = (1..=4).filter(|b| !from.contains(b)).collect();
    let reassign = |replicas: Vec<u32>| Command::ReassignPartition {
        topic: "m".into(),
        partition: 0,
        replicas,
    };
    s.apply(&reassign(to.clone())).unwrap();
    for b in 1..=4 {
        assert_eq!(
            s.replicas_on(b).len(),
            1,
            "broker {b} runs the moving group"
        );
    }
    let moving = s.clone();
    assert!(s.apply(&reassign(from.clone())).is_err(), "already moving");
    let wrong = Command::CompleteReassignment {
        topic: "m".into(),
        partition: 0,
        replicas: from.clone(),
    };
    assert!(s.apply(&wrong).is_err(), "not the target");
    assert_eq!(s, moving);
    s.apply(&Command::CompleteReassignment {
        topic: "m".into(),
        partition: 0,
        replicas: to.clone(),
    })
    .unwrap();
    let p = &s.topics["m"].partitions[0];
    assert_eq!((p.replicas.clone(), p.target.clone()), (to.clone(), None));
    for b in from {
        assert!(s.replicas_on(b).is_empty(), "broker {b} left");
    }
}

#[test]
fn a_replication_factor_change_moves_partitions_to_the_least_loaded_brokers() {
    let mut s = cluster(3);
    s.apply(&create("r", 3, 1)).unwrap();
    let alter = |rf| Command::AlterReplicationFactor {
        name: "r".into(),
        replication_factor: rf,
    };
    for bad in [alter(0), alter(4), alter(1)] {
        assert!(s.apply(&bad).is_err(), "{bad:?}");
    }
    s.apply(&alter(2)).unwrap();
    let mut load = BTreeMap::new();
    for p in &s.topics["r"].partitions {
        let target = p.target.clone().expect("every partition moves");
        assert_eq!(target[0], p.replicas[0], "the preferred leader stays first");
        assert_eq!(target.len(), 2);
        assert_ne!(target[0], target[1]);
        for b in target {
            *load.entry(b).or_insert(0) += 1;
        }
    }
    assert!(load.values().all(|&n| n == 2), "{load:?}");
    assert!(s.apply(&alter(3)).is_err(), "refused while partitions move");
}

#[test]
fn commands_round_trip_through_batches_and_state_through_json() {
    let cmds = [
        Command::RegisterBroker {
            id: 4,
            address: "h:1".into(),
        },
        create("t", 3, 1),
        Command::AlterTopicConfig {
            name: "t".into(),
            configs: BTreeMap::from([("retention.ms".into(), "1000".into())]),
        },
    ];
    let mut s = ClusterState::default();
    for c in &cmds {
        let batch = c.to_batch(1);
        let decoded = Command::from_batch(&batch).unwrap();
        assert_eq!(decoded, vec![c.clone()]);
        s.apply(&decoded[0]).unwrap();
    }
    assert_eq!(s.topics["t"].configs["retention.ms"], "1000");
    let json = serde_json::to_vec(&s).unwrap();
    assert_eq!(serde_json::from_slice::<ClusterState>(&json).unwrap(), s);
    assert!(Command::from_batch(b"junk").is_err());
}

#[test]
fn kafka_addresses_are_recorded_kept_across_registrations_and_bounded() {
    let mut s = cluster(2);
    let set = |id, a: Option<&str>| Command::SetKafkaAddress {
        id,
        address: a.map(String::from),
    };
    s.apply(&set(2, Some("127.0.0.1:19093"))).unwrap();
    assert_eq!(s.brokers[&2].kafka.as_deref(), Some("127.0.0.1:19093"));
    // A broker registering again (a new gRPC address) keeps its Kafka address.
    s.apply(&Command::RegisterBroker {
        id: 2,
        address: "127.0.0.1:7000".into(),
    })
    .unwrap();
    assert_eq!(s.brokers[&2].kafka.as_deref(), Some("127.0.0.1:19093"));
    assert!(s.apply(&set(9, Some("h:1"))).is_err(), "no broker 9");
    let long = "h".repeat(300);
    assert!(s.apply(&set(1, Some(&long))).is_err());
    s.apply(&set(2, None)).unwrap();
    assert_eq!(s.brokers[&2].kafka, None);
}
