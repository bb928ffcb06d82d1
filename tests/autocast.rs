//! Autocast through the C++ shim against PyTorch's own: cptlab's ResNet-20 under
//! `AutocastGuard(cpu, bf16)` gives the loss `torch.autocast("cpu", torch.bfloat16)` gives on the
//! same weights and batch (tests/reference/autocast_bf16.py, run with the project's .venv), and
//! BatchNorm's parameters and statistics stay fp32. Also: the guard is thread-local and nests,
//! and quantized (CPT) layers run under it.
use std::path::{Path, PathBuf};

use cptlab::models::{self, ModelKind, VitConfig};
use cptlab::quant::{autocast_state, AutocastGuard, Bits};
use tch::nn::VarStore;
use tch::{Device, Kind, Reduction, Tensor};

fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: `make venv` installs torch there (the reference needs it)",
        p.display()
    );
    p
}

/// Writes `tensors` (f32) as tests/reference/autocast_bf16.py reads them.
fn write_tensors(dir: &Path, tensors: &[(String, Tensor)]) {
    let mut bytes = Vec::new();
    let mut manifest = Vec::new();
    let mut offset = 0usize;
    for (name, t) in tensors {
        let v: Vec<f32> = Vec::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap();
        for x in &v {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        manifest.push(serde_json::json!({"name": name, "shape": t.size(), "offset": offset}));
        offset += v.len();
    }
    std::fs::write(dir.join("tensors.bin"), bytes).unwrap();
    let m = serde_json::json!({ "tensors": manifest });
    std::fs::write(dir.join("manifest.json"), m.to_string()).unwrap();
}

fn loss(logits: &Tensor, y: &Tensor) -> f64 {
    logits
        .to_kind(Kind::Float)
        .cross_entropy_loss::<Tensor>(y, None, Reduction::Mean, -100, 0.0)
        .double_value(&[])
}

fn max_abs_diff(a: &Tensor, b: &[f64]) -> f64 {
    let a: Vec<f64> = Vec::try_from(a.to_kind(Kind::Double).flatten(0, -1)).unwrap();
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn amp_bf16_matches_torch_autocast_on_the_same_weights_and_batch() {
    tch::set_num_threads(1);
    tch::manual_seed(11);
    let vs = VarStore::new(Device::Cpu);
    let model = models::build(
        ModelKind::Resnet20,
        &VitConfig::default(),
        &vs.root(),
        10,
        3,
    );
    let x = Tensor::randn([16, 3, 32, 32], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(10, [16], (Kind::Int64, Device::Cpu));
    let mut tensors: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    // The reference takes BatchNorm's statistics before either forward updates them.
    let tensors: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(n, t)| (n, t.detach().copy()))
        .chain([("x".into(), x.copy()), ("y".into(), y.to_kind(Kind::Float))])
        .collect();
    let dir = tempfile::tempdir().unwrap();
    write_tensors(dir.path(), &tensors);

    let (logits32, logits_amp) = tch::no_grad(|| {
        let l32 = model.forward(&x, true, Bits::FULL);
        let _amp = AutocastGuard::enter(Device::Cpu, Kind::BFloat16).unwrap();
        assert_eq!(autocast_state(Device::Cpu), Some(Kind::BFloat16));
        (l32, model.forward(&x, true, Bits::FULL))
    });
    assert_eq!(
        autocast_state(Device::Cpu),
        None,
        "the guard's drop left autocast"
    );
    assert_eq!(logits32.kind(), Kind::Float);
    assert_eq!(
        logits_amp.kind(),
        Kind::BFloat16,
        "the classifier ran in bf16"
    );
    // fp32 weights, and BatchNorm's parameters and running statistics stay fp32.
    for (name, t) in vs.variables() {
        assert_eq!(t.kind(), Kind::Float, "{name}");
    }
    let (ours32, ours_amp) = (loss(&logits32, &y), loss(&logits_amp, &y));

    let out = std::process::Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/autocast_bf16.py"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["amp_logits_dtype"], "torch.bfloat16");
    let f = |k: &str| r[k].as_f64().unwrap();
    let v = |k: &str| -> Vec<f64> {
        r[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let (theirs32, theirs_amp) = (f("fp32_loss"), f("amp_loss"));
    // The same model in fp32 (only summation order may differ).
    assert!(
        (ours32 - theirs32).abs() <= 1e-5 * theirs32.abs(),
        "fp32: {ours32} vs {theirs32}"
    );
    assert!(max_abs_diff(&logits32, &v("fp32_logits")) < 1e-4);
    // Autocast changed the numbers, by about bf16's precision...
    let amp_effect = (theirs_amp - theirs32).abs();
    assert!(amp_effect > 1e-6, "autocast had no effect: {theirs_amp}");
    // ...and ours is PyTorch's within bf16 tolerance (2^-8 relative), and much closer to it
    // than to fp32 (so the tolerance cannot hide a missing cast).
    let diff = (ours_amp - theirs_amp).abs();
    eprintln!("amp_bf16 loss: ours {ours_amp}, torch.autocast {theirs_amp}, fp32 {theirs32}");
    assert!(
        diff <= theirs_amp.abs() / 256.0 && diff < amp_effect / 4.0,
        "amp_bf16: ours {ours_amp}, torch.autocast {theirs_amp}, fp32 {theirs32}"
    );
    let logit_diff = max_abs_diff(&logits_amp, &v("amp_logits"));
    let logit_effect = max_abs_diff(&logits32, &v("amp_logits"));
    assert!(
        logit_diff < logit_effect / 4.0,
        "logits: {logit_diff} from torch.autocast, {logit_effect} from fp32"
    );
}

#[test]
fn autocast_is_per_thread_and_nests() {
    let outer = AutocastGuard::enter(Device::Cpu, Kind::BFloat16).unwrap();
    std::thread::spawn(|| {
        // Another thread sees none of it and enters its own.
        assert_eq!(autocast_state(Device::Cpu), None);
        let _g = AutocastGuard::enter(Device::Cpu, Kind::Half).unwrap();
        let a = Tensor::randn([4, 4], (Kind::Float, Device::Cpu));
        assert_eq!(a.matmul(&a).kind(), Kind::Half);
    })
    .join()
    .unwrap();
    assert_eq!(autocast_state(Device::Cpu), Some(Kind::BFloat16));
    {
        let _inner = AutocastGuard::enter(Device::Cpu, Kind::Half).unwrap();
        assert_eq!(autocast_state(Device::Cpu), Some(Kind::Half));
    }
    assert_eq!(autocast_state(Device::Cpu), Some(Kind::BFloat16));
    let a = Tensor::randn([4, 4], (Kind::Float, Device::Cpu));
    assert_eq!(a.matmul(&a).kind(), Kind::BFloat16);
    drop(outer);
    assert_eq!(autocast_state(Device::Cpu), None);
    assert_eq!(a.matmul(&a).kind(), Kind::Float);
    assert!(AutocastGuard::enter(Device::Cpu, Kind::Float).is_err());
}

/// CPT's quantized layers (fake-quantized forward, error-signal quantization in backward)
/// under autocast: the ops run in bf16, the gradients reach the fp32 weights in fp32.
#[test]
fn quantized_layers_run_under_autocast() {
    tch::manual_seed(5);
    let vs = VarStore::new(Device::Cpu);
    let model = models::build(
        ModelKind::Resnet20,
        &VitConfig::default(),
        &vs.root(),
        10,
        3,
    );
    let x = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(10, [4], (Kind::Int64, Device::Cpu));
    let bits = Bits { fwd: 4, bwd: 8 };
    let logits = {
        let _amp = AutocastGuard::enter(Device::Cpu, Kind::BFloat16).unwrap();
        model.forward(&x, true, bits)
    };
    assert_eq!(logits.kind(), Kind::BFloat16);
    let l = logits.to_kind(Kind::Float).cross_entropy_loss::<Tensor>(
        &y,
        None,
        Reduction::Mean,
        -100,
        0.0,
    );
    l.backward();
    for (name, t) in vs.trainable_variables().iter().enumerate() {
        let g = t.grad();
        assert!(g.defined(), "parameter {name} has no gradient");
        assert_eq!(g.kind(), Kind::Float, "parameter {name}");
        assert!(
            bool::try_from(g.isfinite().all()).unwrap(),
            "parameter {name}"
        );
    }
    let total: f64 = vs
        .trainable_variables()
        .iter()
        .map(|t| t.grad().abs().sum(Kind::Float).double_value(&[]))
        .sum();
    assert!(total > 0.0);
}
