//! Batch assembly with random crop (zero padding) and horizontal flip.
//!
//! A sample's random choice is a pure function of (seed, epoch, its position in the epoch
//! permutation), so it is augmented identically whatever the world size or rank.

use super::{ImageShape, Split};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Augment {
    /// Pad by this many zero pixels on each side, then crop back to size; 4 = CIFAR standard,
    /// 0 = off.
    pub random_crop_padding: usize,
    pub horizontal_flip: bool,
}

impl Augment {
    pub const NONE: Augment = Augment {
        random_crop_padding: 0,
        horizontal_flip: false,
    };
    pub const CIFAR: Augment = Augment {
        random_crop_padding: 4,
        horizontal_flip: true,
    };

    /// The choice for the sample at `position` of epoch `epoch`'s permutation.
    pub fn choice(&self, seed: u64, epoch: u64, position: u64) -> Choice {
        let h = splitmix64(splitmix64(splitmix64(seed) ^ epoch) ^ position);
        let span = 2 * self.random_crop_padding as u64 + 1;
        let pad = self.random_crop_padding as isize;
        Choice {
            // Disjoint bit fields: dx bits 0..24, dy bits 24..48, flip bit 63.
            dx: ((h & 0xff_ffff) % span) as isize - pad,
            dy: (((h >> 24) & 0xff_ffff) % span) as isize - pad,
            flip: self.horizontal_flip && h >> 63 == 1,
        }
    }
}

/// How one sample is transformed: output pixel (y, x) comes from source (y + dy, x + dx), zero
/// outside the image, then the row is mirrored when `flip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    pub dx: isize,
    pub dy: isize,
    pub flip: bool,
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Writes one CHW image transformed by `c` into `dst` (same size); `dst` is fully overwritten.
pub fn apply(src: &[u8], shape: &ImageShape, c: Choice, dst: &mut [u8]) {
    let (h, w) = (shape.height as isize, shape.width as isize);
    let plane = shape.height * shape.width;
    debug_assert_eq!(src.len(), dst.len());
    // Columns x in [x0, x1) read source columns x + dx inside the image.
    let x0 = (-c.dx).clamp(0, w) as usize;
    let x1 = (w - c.dx).clamp(0, w) as usize;
    for ch in 0..shape.channels {
        let s = &src[ch * plane..][..plane];
        let d = &mut dst[ch * plane..][..plane];
        for (y, row) in d.chunks_exact_mut(shape.width).enumerate() {
            let sy = y as isize + c.dy;
            if sy < 0 || sy >= h || x0 >= x1 {
                row.fill(0);
                continue;
            }
            let srow = &s[sy as usize * shape.width..][..shape.width];
            let from = &srow[(x0 as isize + c.dx) as usize..(x1 as isize + c.dx) as usize];
            if c.flip {
                // Mirrored: output column x is unflipped column w-1-x.
                let (lo, hi) = (shape.width - x1, shape.width - x0);
                row[..lo].fill(0);
                row[hi..].fill(0);
                row[lo..hi].copy_from_slice(from);
                row[lo..hi].reverse();
            } else {
                row[..x0].fill(0);
                row[x1..].fill(0);
                row[x0..x1].copy_from_slice(from);
            }
        }
    }
}

/// Copies `split`'s images at `indices` into one NCHW u8 buffer (and their labels), augmented by
/// the choice for each sample's `positions` entry (its place in the epoch permutation, as given
/// by `ShardPlan::rank_positions`). Reuses the buffers' capacity. Panics if the slices differ in
/// length or an index is out of range.
#[allow(clippy::too_many_arguments)]
pub fn fill_batch(
    split: &Split,
    shape: &ImageShape,
    indices: &[u32],
    positions: &[u64],
    aug: &Augment,
    seed: u64,
    epoch: u64,
    out_pixels: &mut Vec<u8>,
    out_labels: &mut Vec<i64>,
) {
    assert_eq!(indices.len(), positions.len(), "one position per index");
    let n = shape.numel();
    // Every byte is overwritten below, so only growth needs initialising.
    out_pixels.resize(indices.len() * n, 0);
    out_labels.clear();
    let identity = *aug == Augment::NONE;
    for ((&i, &pos), dst) in indices
        .iter()
        .zip(positions)
        .zip(out_pixels.chunks_exact_mut(n))
    {
        let src = split.image(i as usize, shape);
        if identity {
            dst.copy_from_slice(src);
        } else {
            apply(src, shape, aug.choice(seed, epoch, pos), dst);
        }
        out_labels.push(split.labels[i as usize] as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic;

    const SHAPE: ImageShape = ImageShape {
        channels: 3,
        height: 8,
        width: 6,
    };

    fn split(n: usize) -> Split {
        Split {
            images: (0..n * SHAPE.numel())
                .map(|i| (i % 251 + 1) as u8)
                .collect(),
            labels: (0..n as u16).collect(),
        }
    }

    #[test]
    fn no_augmentation_copies_the_source() {
        let s = split(10);
        let (mut px, mut lb) = (Vec::new(), Vec::new());
        fill_batch(
            &s,
            &SHAPE,
            &[7, 2, 2],
            &[0, 1, 2],
            &Augment::NONE,
            1,
            0,
            &mut px,
            &mut lb,
        );
        assert_eq!(lb, vec![7, 2, 2]);
        let n = SHAPE.numel();
        assert_eq!(&px[..n], s.image(7, &SHAPE));
        assert_eq!(&px[n..2 * n], s.image(2, &SHAPE));
        // Reuse: a smaller batch shrinks the buffers without reallocating.
        let cap = px.capacity();
        fill_batch(
            &s,
            &SHAPE,
            &[1],
            &[0],
            &Augment::CIFAR,
            1,
            0,
            &mut px,
            &mut lb,
        );
        assert_eq!((px.len(), lb.len(), px.capacity()), (n, 1, cap));
    }

    #[test]
    fn zero_offset_is_identity_and_flip_twice_is_identity() {
        let s = split(1);
        let src = s.image(0, &SHAPE);
        let mut a = vec![0; src.len()];
        apply(
            src,
            &SHAPE,
            Choice {
                dx: 0,
                dy: 0,
                flip: false,
            },
            &mut a,
        );
        assert_eq!(a, src);
        let mut b = vec![0; src.len()];
        let flip = Choice {
            dx: 0,
            dy: 0,
            flip: true,
        };
        apply(src, &SHAPE, flip, &mut a);
        assert_ne!(a, src);
        assert_eq!(a[0], src[5]); // first row mirrored
        apply(&a, &SHAPE, flip, &mut b);
        assert_eq!(b, src);
    }

    #[test]
    fn padding_region_is_zero_and_the_rest_shifted() {
        let s = split(1);
        let src = s.image(0, &SHAPE);
        let mut d = vec![9; src.len()];
        let (dx, dy) = (2isize, -3isize);
        apply(
            src,
            &SHAPE,
            Choice {
                dx,
                dy,
                flip: false,
            },
            &mut d,
        );
        for ch in 0..3 {
            for y in 0..8isize {
                for x in 0..6isize {
                    let (sy, sx) = (y + dy, x + dx);
                    let got = d[ch * 48 + (y * 6 + x) as usize];
                    if (0..8).contains(&sy) && (0..6).contains(&sx) {
                        assert_eq!(got, src[ch * 48 + (sy * 6 + sx) as usize]);
                    } else {
                        assert_eq!(got, 0, "padding at c{ch} y{y} x{x}");
                    }
                }
            }
        }
        // A shift past the whole image leaves only padding.
        apply(
            src,
            &SHAPE,
            Choice {
                dx: 7,
                dy: 0,
                flip: true,
            },
            &mut d,
        );
        assert!(d.iter().all(|&v| v == 0));
        // Flip after crop: mirror of the unflipped result.
        let mut u = vec![0; src.len()];
        apply(
            src,
            &SHAPE,
            Choice {
                dx: -1,
                dy: 1,
                flip: false,
            },
            &mut u,
        );
        apply(
            src,
            &SHAPE,
            Choice {
                dx: -1,
                dy: 1,
                flip: true,
            },
            &mut d,
        );
        for (ur, dr) in u.chunks(6).zip(d.chunks(6)) {
            assert!(ur.iter().eq(dr.iter().rev()));
        }
    }

    #[test]
    fn choices_are_deterministic_in_range_and_varied() {
        let aug = Augment::CIFAR;
        let cs: Vec<Choice> = (0..1000).map(|p| aug.choice(3, 1, p)).collect();
        assert_eq!(
            cs,
            (0..1000).map(|p| aug.choice(3, 1, p)).collect::<Vec<_>>()
        );
        assert!(cs.iter().all(|c| c.dx.abs() <= 4 && c.dy.abs() <= 4));
        let flips = cs.iter().filter(|c| c.flip).count();
        assert!((400..600).contains(&flips), "{flips}");
        for v in -4..=4 {
            assert!(cs.iter().any(|c| c.dx == v) && cs.iter().any(|c| c.dy == v));
        }
        assert_ne!(
            cs[..20],
            (0..20).map(|p| aug.choice(3, 2, p)).collect::<Vec<_>>()[..]
        );
        assert!((0..100).all(|p| !Augment::NONE.choice(3, 1, p).flip));
    }

    #[test]
    fn a_sample_is_augmented_the_same_at_any_world_size() {
        use crate::data::sampler::{epoch_permutation, ShardPlan};
        let ds = synthetic::generate(64, 1, 0);
        let shape = ds.shape;
        let perm = epoch_permutation(64, 9, 3);
        let n = shape.numel();
        let mut by_sample = std::collections::HashMap::new();
        for w in [1, 2, 4] {
            for r in 0..w {
                let plan = ShardPlan::new(16, w, r, true).unwrap();
                for step in 0..plan.steps_per_epoch(64) as u64 {
                    let pos = plan.rank_positions(64, step);
                    let idx = plan.rank_indices(&perm, step);
                    let (mut px, mut lb) = (Vec::new(), Vec::new());
                    fill_batch(
                        &ds.train,
                        &shape,
                        &idx,
                        &pos,
                        &Augment::CIFAR,
                        9,
                        3,
                        &mut px,
                        &mut lb,
                    );
                    for (k, &i) in idx.iter().enumerate() {
                        let img = px[k * n..(k + 1) * n].to_vec();
                        let prev = by_sample.entry(i).or_insert_with(|| img.clone());
                        assert_eq!(*prev, img, "sample {i} differs at W={w}");
                    }
                }
            }
        }
        assert_eq!(by_sample.len(), 64);
    }
}
