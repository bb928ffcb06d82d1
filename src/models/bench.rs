//! Step-time overhead of fake quantization (ignored tests; run by hand):
//! `cargo test --release --lib models::bench -- --ignored --nocapture --test-threads 1`
//! Env: `CPTLAB_BENCH_THREADS` (libtorch intra-op threads, default 1), `CPTLAB_BENCH_STEPS`.
use std::time::Instant;

use tch::{nn::VarStore, Device, Kind, Reduction, Tensor};

use crate::models::{build, ModelKind, VitConfig};
use crate::quant::{quantize_grads_, Bits};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median ms of a training step (forward, loss, backward, zero grads) of `kind` at each of
/// `bits`, the configurations interleaved step by step so that load drift hits all alike.
fn step_ms(kind: ModelKind, batch: i64, bits: &[Bits], steps: usize) -> Vec<f64> {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let model = build(kind, &VitConfig::default(), &vs.root(), 10, 3);
    let x = Tensor::randn([batch, 3, 32, 32], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(10, [batch], (Kind::Int64, Device::Cpu));
    let mut times = vec![Vec::new(); bits.len()];
    for i in 0..steps + 2 {
        for (b, times) in bits.iter().zip(&mut times) {
            let t = Instant::now();
            let loss = model.forward(&x, true, *b).cross_entropy_loss::<Tensor>(
                &y,
                None,
                Reduction::Mean,
                -100,
                0.0,
            );
            loss.backward();
            for mut v in vs.trainable_variables() {
                v.zero_grad();
            }
            if i >= 2 {
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    times.into_iter().map(median).collect()
}

#[test]
#[ignore]
fn fake_quant_step_overhead() {
    let threads = env("CPTLAB_BENCH_THREADS", 1);
    tch::set_num_threads(threads as i32);
    let steps = env("CPTLAB_BENCH_STEPS", 15);
    let configs = [
        Bits::FULL,
        Bits { fwd: 8, bwd: 32 },
        Bits { fwd: 32, bwd: 8 },
        Bits { fwd: 4, bwd: 8 },
    ];
    for (kind, batch) in [(ModelKind::Lenet, 128), (ModelKind::Resnet20, 128)] {
        let ms = step_ms(kind, batch, &configs, steps);
        let mut line = format!("{kind} batch {batch}, {threads} thread(s), median of {steps}:");
        for (b, t) in configs.iter().zip(&ms) {
            line += &format!(
                " fwd {}/bwd {} {t:.1} ms ({:.2}x);",
                b.fwd,
                b.bwd,
                t / ms[0]
            );
        }
        println!("{line}");
    }
}

#[test]
#[ignore]
fn flat_gradient_quantization_cost() {
    tch::set_num_threads(env("CPTLAB_BENCH_THREADS", 1) as i32);
    // ResNet-20-sized buffer (≈ 270k) split like its parameters, and 11.7M (ResNet-18).
    for (n, segs) in [(272_474i64, 65i64), (11_689_512, 62)] {
        let mut g = Tensor::randn([n], (Kind::Float, Device::Cpu));
        let len = n / segs;
        let segments: Vec<(i64, i64)> = (0..segs).map(|i| (i * len, len)).collect();
        let times: Vec<f64> = (0..21)
            .map(|_| {
                let t = Instant::now();
                quantize_grads_(&mut g, &segments, 8).unwrap();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        println!(
            "quantize_grads_ {n} elements in {segs} segments: {:.2} ms",
            median(times)
        );
    }
}

#[test]
#[ignore]
fn quantizer_pieces() {
    tch::set_num_threads(env("CPTLAB_BENCH_THREADS", 1) as i32);
    let x = Tensor::randn([128, 16, 32, 32], (Kind::Float, Device::Cpu));
    let g = Tensor::randn([128, 16, 32, 32], (Kind::Float, Device::Cpu));
    let time = |name: &str, f: &dyn Fn()| {
        let times: Vec<f64> = (0..21)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        println!("{name}: {:.2} ms", median(times));
    };
    time("copy", &|| {
        let _ = x.copy();
    });
    time("relu", &|| {
        let _ = x.relu();
    });
    time("aminmax", &|| {
        let _ = x.aminmax(None, false);
    });
    time("fake_quant_per_tensor fwd (incl aminmax)", &|| {
        let _ = crate::quant::fake::fake_quant_per_tensor(&x, 8);
    });
    let xr = x.detach().set_requires_grad(true);
    time("fake_quant fwd+bwd", &|| {
        let q = crate::quant::fake::fake_quant_per_tensor(&xr, 8);
        (&q * &g).sum(Kind::Float).backward();
    });
    time("mul by mask-like", &|| {
        let _ = &g * &x;
    });
    time("stochastic_round", &|| {
        let _ = crate::quant::stochastic_round(&g, 8);
    });
}
