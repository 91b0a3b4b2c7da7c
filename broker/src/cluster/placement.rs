//! Replica placement, as Kafka does it: preferred leaders round-robin over brokers,
//! followers after them with a shift that grows per round, so leaders and replicas both
//! spread evenly.

use super::MetadataError;

/// Replica lists for `partitions` partitions over `brokers` (sorted ids), starting the
/// round-robin at `start`. The first replica of each list is the preferred leader.
pub fn place(
    brokers: &[u32],
    partitions: u32,
    replication_factor: u32,
    start: usize,
) -> Result<Vec<Vec<u32>>, MetadataError> {
    let n = brokers.len();
    let rf = replication_factor.max(1) as usize;
    if partitions == 0 {
        return Err(MetadataError::Placement(
            "a topic needs at least one partition".into(),
        ));
    }
    if rf > n {
        return Err(MetadataError::Placement(format!(
            "replication factor {rf} exceeds the {n} available broker(s)"
        )));
    }
    Ok((0..partitions as usize)
        .map(|p| {
            let leader = (start + p) % n;
            // Kafka's scheme: follower i sits 1 + (shift + i - 1) mod (n - 1) brokers after
            // the leader, and the shift grows on every wrap around the ring, so followers
            // are distinct, never the leader, and partitions with one leader do not also
            // share all their followers.
            let shift = (start + p) / n;
            (0..rf)
                .map(|i| {
                    if i == 0 {
                        brokers[leader]
                    } else {
                        brokers[(leader + 1 + (shift + i - 1) % (n - 1)) % n]
                    }
                })
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn even_and_distinct() {
        for (n, parts, rf) in [
            (3u32, 12u32, 3u32),
            (5, 48, 3),
            (4, 7, 2),
            (1, 3, 1),
            (3, 3, 1),
        ] {
            let brokers: Vec<u32> = (1..=n).collect();
            let placed = place(&brokers, parts, rf, 0).unwrap();
            let mut leaders: HashMap<u32, usize> = HashMap::new();
            let mut replicas: HashMap<u32, usize> = HashMap::new();
            for r in &placed {
                assert_eq!(r.len(), rf as usize);
                let mut d = r.clone();
                d.sort();
                d.dedup();
                assert_eq!(
                    d.len(),
                    r.len(),
                    "replicas of a partition are distinct: {r:?}"
                );
                *leaders.entry(r[0]).or_default() += 1;
                for b in r {
                    *replicas.entry(*b).or_default() += 1;
                }
            }
            let spread = |m: &HashMap<u32, usize>| {
                let v: Vec<usize> = brokers
                    .iter()
                    .map(|b| m.get(b).copied().unwrap_or(0))
                    .collect();
                v.iter().max().unwrap() - v.iter().min().unwrap()
            };
            assert!(
                spread(&leaders) <= 1,
                "{n} brokers, {parts} partitions: {leaders:?}"
            );
            assert!(spread(&replicas) <= rf as usize, "{replicas:?}");
        }
        assert!(place(&[1, 2], 1, 3, 0).is_err());
        assert!(place(&[1, 2], 0, 1, 0).is_err());
    }
}
