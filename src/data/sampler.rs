//! Epoch permutations and per-rank sharding that do not depend on the world size: the global
//! batch of a step is the same set of samples whether 1 or 8 ranks share it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::error::DataError;

/// A permutation of `0..n` that depends only on (seed, epoch): ChaCha8 seeded from `seed` on
/// stream `epoch`, Fisher–Yates. Panics if `n` does not fit in u32.
pub fn epoch_permutation(n: usize, seed: u64, epoch: u64) -> Vec<u32> {
    let n = u32::try_from(n).expect("data set larger than u32::MAX samples");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    let mut perm: Vec<u32> = (0..n).collect();
    for i in (1..n).rev() {
        // u32 ranges so the draw is the same on every platform.
        let j = rng.random_range(0..=i);
        perm.swap(i as usize, j as usize);
    }
    perm
}

/// Which part of each global batch one rank takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardPlan {
    pub global_batch: usize,
    pub world_size: usize,
    pub rank: usize,
    /// Drop the last, partial global batch of an epoch.
    pub drop_last: bool,
}

impl ShardPlan {
    /// Checks that the global batch splits evenly over the ranks.
    pub fn new(
        global_batch: usize,
        world_size: usize,
        rank: usize,
        drop_last: bool,
    ) -> Result<ShardPlan, DataError> {
        let plan = ShardPlan {
            global_batch,
            world_size,
            rank,
            drop_last,
        };
        plan.validate()?;
        Ok(plan)
    }

    pub fn validate(&self) -> Result<(), DataError> {
        if self.global_batch == 0 || self.world_size == 0 {
            return Err(DataError::InvalidOption(
                "global batch size and world size must be positive".into(),
            ));
        }
        if !self.global_batch.is_multiple_of(self.world_size) {
            return Err(DataError::InvalidOption(format!(
                "global batch size {} is not divisible by world size {}",
                self.global_batch, self.world_size
            )));
        }
        if self.rank >= self.world_size {
            return Err(DataError::InvalidOption(format!(
                "rank {} out of range for world size {}",
                self.rank, self.world_size
            )));
        }
        Ok(())
    }

    /// Samples per rank in a full batch.
    pub fn local_batch(&self) -> usize {
        self.global_batch / self.world_size
    }

    pub fn steps_per_epoch(&self, n: usize) -> usize {
        if self.drop_last {
            n / self.global_batch
        } else {
            n.div_ceil(self.global_batch)
        }
    }

    /// Positions in the epoch permutation that this rank takes at `step`: within the global
    /// batch `[step*B, (step+1)*B)`, every W-th starting at `rank` (like PyTorch's
    /// DistributedSampler). In a partial last batch ranks may get unequal counts.
    pub fn rank_positions(&self, n: usize, step: u64) -> Vec<u64> {
        let b = self.global_batch as u64;
        let start = (step * b).min(n as u64);
        let end = (start + b).min(n as u64);
        (start + self.rank as u64..end)
            .step_by(self.world_size)
            .collect()
    }

    /// The sample indices this rank takes at `step`: `perm` at [`Self::rank_positions`].
    pub fn rank_indices(&self, perm: &[u32], step: u64) -> Vec<u32> {
        self.rank_positions(perm.len(), step)
            .into_iter()
            .map(|p| perm[p as usize])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn permutation_is_deterministic_and_a_permutation() {
        let a = epoch_permutation(1000, 1, 0);
        assert_eq!(a, epoch_permutation(1000, 1, 0));
        assert_ne!(a, epoch_permutation(1000, 1, 1));
        assert_ne!(a, epoch_permutation(1000, 2, 0));
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..1000).collect::<Vec<u32>>());
        assert!(epoch_permutation(0, 1, 0).is_empty());
        assert_eq!(epoch_permutation(1, 1, 0), vec![0]);
    }

    #[test]
    fn ranks_are_disjoint_and_cover_the_global_batch_at_any_world_size() {
        let n = 1003;
        let perm = epoch_permutation(n, 5, 2);
        for drop_last in [true, false] {
            let steps = ShardPlan::new(64, 1, 0, drop_last)
                .unwrap()
                .steps_per_epoch(n);
            assert_eq!(steps, if drop_last { 15 } else { 16 });
            for step in 0..steps as u64 {
                let mut unions = Vec::new();
                for w in [1, 2, 4] {
                    let mut seen = BTreeSet::new();
                    let mut total = 0;
                    for r in 0..w {
                        let plan = ShardPlan::new(64, w, r, drop_last).unwrap();
                        let idx = plan.rank_indices(&perm, step);
                        if step + 1 < steps as u64 {
                            assert_eq!(idx.len(), plan.local_batch());
                        }
                        total += idx.len();
                        seen.extend(idx);
                    }
                    assert_eq!(seen.len(), total, "ranks overlap at W={w}");
                    unions.push(seen);
                }
                assert!(unions.iter().all(|u| *u == unions[0]));
                let b = step as usize * 64;
                let expect: BTreeSet<u32> = perm[b..(b + 64).min(n)].iter().copied().collect();
                assert_eq!(unions[0], expect);
            }
        }
    }

    #[test]
    fn strided_like_distributed_sampler() {
        let perm: Vec<u32> = (100..108).collect();
        let plan = ShardPlan::new(8, 2, 1, true).unwrap();
        assert_eq!(plan.rank_indices(&perm, 0), vec![101, 103, 105, 107]);
        assert_eq!(plan.rank_positions(8, 0), vec![1, 3, 5, 7]);
        assert!(plan.rank_indices(&perm, 1).is_empty());
    }

    #[test]
    fn bad_plans_are_rejected() {
        assert!(ShardPlan::new(10, 4, 0, true).is_err());
        assert!(ShardPlan::new(8, 4, 4, true).is_err());
        assert!(ShardPlan::new(0, 1, 0, true).is_err());
        assert!(ShardPlan::new(8, 0, 0, true).is_err());
    }
}
