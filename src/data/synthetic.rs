//! A generated stand-in for CIFAR-10: 10 classes of 32×32 RGB, a pure function of the seed.
//!
//! Each class has a smooth random colour template; a sample is its template shifted by up to
//! `MAX_SHIFT` pixels, scaled by a random brightness, plus per-pixel noise. Classes share a common
//! background field, so raw-pixel nearest-mean classifiers are well above chance but far from
//! perfect, while a small CNN (shift-tolerant) learns it readily.

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Dataset, ImageShape, Split};

pub const CLASSES: usize = 10;
pub const SHAPE: ImageShape = ImageShape {
    channels: 3,
    height: 32,
    width: 32,
};
const MAX_SHIFT: usize = 4;
/// Templates are drawn larger than an image so every shift stays inside them.
const CANVAS: usize = 32 + 2 * MAX_SHIFT;
/// Amplitudes in pixel units: shared background, class pattern, noise half-range.
const BACKGROUND: f32 = 45.0;
const PATTERN: f32 = 30.0;
const NOISE: f32 = 70.0;

/// Train and test splits of the given sizes; labels cycle 0..9 so classes are balanced. Each
/// split has its own random stream, so one split does not change when the other's size does.
pub fn generate(train: usize, test: usize, seed: u64) -> Dataset {
    let mut rng = stream(seed, 0);
    let background = smooth_field(&mut rng, 4);
    let templates: Vec<Vec<f32>> = (0..CLASSES)
        .map(|_| {
            let pattern = smooth_field(&mut rng, 6);
            background
                .iter()
                .zip(&pattern)
                .map(|(b, p)| 128.0 + BACKGROUND * b + PATTERN * p)
                .collect()
        })
        .collect();
    Dataset {
        name: "synthetic".into(),
        classes: (0..CLASSES).map(|c| format!("class{c}")).collect(),
        shape: SHAPE,
        train: samples(&templates, train, &mut stream(seed, 1)),
        test: samples(&templates, test, &mut stream(seed, 2)),
    }
}

fn stream(seed: u64, id: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(id);
    rng
}

/// A CANVAS² field per channel in [-1, 1]: a random `grid`×`grid` lattice, bilinearly upsampled.
fn smooth_field(rng: &mut ChaCha8Rng, grid: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(3 * CANVAS * CANVAS);
    for _ in 0..3 {
        let knots: Vec<f32> = (0..(grid + 1) * (grid + 1))
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let step = CANVAS as f32 / grid as f32;
        for y in 0..CANVAS {
            for x in 0..CANVAS {
                let (fy, fx) = (y as f32 / step, x as f32 / step);
                let (iy, ix) = ((fy as usize).min(grid - 1), (fx as usize).min(grid - 1));
                let (ty, tx) = (fy - iy as f32, fx - ix as f32);
                let k = |yy: usize, xx: usize| knots[yy * (grid + 1) + xx];
                let top = k(iy, ix) * (1.0 - tx) + k(iy, ix + 1) * tx;
                let bottom = k(iy + 1, ix) * (1.0 - tx) + k(iy + 1, ix + 1) * tx;
                out.push(top * (1.0 - ty) + bottom * ty);
            }
        }
    }
    out
}

fn samples(templates: &[Vec<f32>], n: usize, rng: &mut ChaCha8Rng) -> Split {
    let numel = SHAPE.numel();
    let mut images = Vec::with_capacity(n * numel);
    let mut labels = Vec::with_capacity(n);
    let span = 2 * MAX_SHIFT + 1;
    for i in 0..n {
        let class = i % CLASSES;
        let t = &templates[class];
        let dy = rng.random_range(0..span);
        let dx = rng.random_range(0..span);
        let brightness = rng.random_range(0.7f32..1.3);
        for c in 0..3 {
            for y in 0..32 {
                let row = &t[(c * CANVAS + y + dy) * CANVAS + dx..][..32];
                // Four noise draws from each 64-bit word: triangular noise, cheap to make.
                for quad in row.chunks_exact(4) {
                    let mut bits = rng.next_u64();
                    for &v in quad {
                        let a = (bits & 0xff) as f32;
                        let b = ((bits >> 8) & 0xff) as f32;
                        bits >>= 16;
                        let noise = (a + b - 255.0) * (NOISE / 255.0);
                        images.push((v * brightness + noise).clamp(0.0, 255.0) as u8);
                    }
                }
            }
        }
        labels.push(class as u16);
    }
    Split { images, labels }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_other_seed_differs() {
        let a = generate(200, 50, 7);
        let b = generate(200, 50, 7);
        let c = generate(200, 50, 8);
        assert_eq!(a, b);
        assert_ne!(a.train.images, c.train.images);
        assert_ne!(a.test.images, c.test.images);
        assert_eq!(a.train.images.len(), 200 * 3072);
        assert_eq!(a.test.labels.len(), 50);
        // A split does not depend on the other split's size.
        assert_eq!(generate(10, 50, 7).test, a.test);
    }

    #[test]
    fn nearest_class_mean_is_above_chance_but_not_perfect() {
        let ds = generate(2_000, 1_000, 3);
        let n = SHAPE.numel();
        let mut means = vec![0f32; CLASSES * n];
        let mut counts = [0f32; CLASSES];
        for i in 0..ds.train.len() {
            let c = ds.train.labels[i] as usize;
            counts[c] += 1.0;
            for (m, &p) in means[c * n..][..n]
                .iter_mut()
                .zip(ds.train.image(i, &SHAPE))
            {
                *m += p as f32;
            }
        }
        for c in 0..CLASSES {
            means[c * n..][..n].iter_mut().for_each(|m| *m /= counts[c]);
        }
        let correct = (0..ds.test.len())
            .filter(|&i| {
                let img = ds.test.image(i, &SHAPE);
                let dist = |c: usize| -> f32 {
                    img.iter()
                        .zip(&means[c * n..][..n])
                        .map(|(&p, m)| (p as f32 - m).powi(2))
                        .sum()
                };
                let best = (0..CLASSES)
                    .min_by(|&a, &b| dist(a).total_cmp(&dist(b)))
                    .unwrap();
                best == ds.test.labels[i] as usize
            })
            .count();
        let acc = correct as f64 / ds.test.len() as f64;
        assert!(acc > 0.3 && acc < 0.95, "nearest-class-mean accuracy {acc}");
    }
}
