//! Image classifiers built from quantizable layers.
//!
//! Every convolution and fully connected layer is a [`QConv2d`](crate::quant::QConv2d) or
//! [`QLinear`](crate::quant::QLinear). Models expose them in forward order through
//! [`Classifier::visit_layers`]; [`build`] leaves every layer `Quantized` except the final
//! classifier, which is `FullPrecision` (CPT's policy). [`Classifier::set_layer_roles`] changes
//! which of the first and last layers stay at full precision.
//!
//! Parameter names follow torchvision's `state_dict` keys where a torchvision model exists.
use tch::nn::{self, BatchNorm, Init};
use tch::Tensor;

use crate::quant::{Bits, LayerRole, QLayer};

mod alexnet;
#[cfg(test)]
mod bench;
mod cifar_resnet;
mod cost;
pub use cost::measure_cost;
mod densenet;
mod lenet;
mod resnet;
mod squeezenet;
mod vgg;
mod vit;

pub use crate::config::model::{validate_vit, ModelInfo, ModelKind, VitConfig};

/// An image classifier.
pub trait Classifier: Send {
    /// Logits `[N, num_classes]` for images `[N, in_channels, H, W]`. `train` switches
    /// BatchNorm (batch statistics, running-stat updates) and dropout.
    fn forward(&self, x: &Tensor, train: bool, bits: Bits) -> Tensor;

    /// Calls `f` on every quantizable layer in forward order: the first is the layer that sees
    /// the input image, the last is the classifier producing the logits.
    fn visit_layers(&mut self, f: &mut dyn FnMut(&mut dyn QLayer));

    /// Makes every layer `Quantized` except the first (if `first_full`) and the last (if
    /// `last_full`), which become `FullPrecision`. [`build`] applies `(false, true)`.
    fn set_layer_roles(&mut self, first_full: bool, last_full: bool) {
        let mut count = 0;
        self.visit_layers(&mut |_| count += 1);
        let mut i = 0;
        self.visit_layers(&mut |l| {
            let full = (i == 0 && first_full) || (i + 1 == count && last_full);
            l.set_role(if full {
                LayerRole::FullPrecision
            } else {
                LayerRole::Quantized
            });
            i += 1;
        });
    }
}

/// Builds `kind` with its parameters under `p`. `vit` is only read for [`ModelKind::Vit`].
///
/// # Panics
/// If `kind` is `Vit` and [`validate_vit`] rejects `vit`.
pub fn build(
    kind: ModelKind,
    vit: &VitConfig,
    p: &nn::Path,
    num_classes: i64,
    in_channels: i64,
) -> Box<dyn Classifier> {
    let (c, n) = (in_channels, num_classes);
    let mut model: Box<dyn Classifier> = match kind {
        ModelKind::Lenet => Box::new(lenet::LeNet::new(p, c, n)),
        ModelKind::Alexnet => Box::new(alexnet::AlexNet::new(p, c, n)),
        ModelKind::Vgg11Bn => Box::new(vgg::Vgg::new(p, &vgg::VGG11, c, n)),
        ModelKind::Resnet18 => Box::new(resnet::ResNet::new(p, [2, 2, 2, 2], c, n)),
        ModelKind::Densenet121 => {
            Box::new(densenet::DenseNet::new(p, 32, [6, 12, 24, 16], 64, c, n))
        }
        ModelKind::Squeezenet1_0 => Box::new(squeezenet::SqueezeNet::new(p, c, n)),
        ModelKind::Vit => {
            if let Err(e) = validate_vit(vit) {
                panic!("invalid ViT config: {e}");
            }
            Box::new(vit::Vit::new(p, vit, c, n))
        }
        ModelKind::Resnet20 => Box::new(cifar_resnet::CifarResNet::new(p, 3, c, n)),
        ModelKind::Resnet56 => Box::new(cifar_resnet::CifarResNet::new(p, 9, c, n)),
        ModelKind::Resnet74 => Box::new(cifar_resnet::CifarResNet::new(p, 12, c, n)),
    };
    model.set_layer_roles(false, true);
    model
}

/// `nn.BatchNorm2d` with PyTorch's defaults (eps 1e-5, momentum 0.1, weight 1, bias 0); tch's
/// own default initialises the weight uniformly instead.
fn batch_norm2d(p: nn::Path, channels: i64) -> BatchNorm {
    let config = nn::BatchNormConfig {
        eps: 1e-5,
        momentum: 0.1,
        ws_init: Init::Const(1.0),
        bs_init: Init::Const(0.0),
        ..Default::default()
    };
    nn::batch_norm2d(p, channels, config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::VarStore;
    use tch::{Device, Kind};

    /// Number of trainable parameters (torchvision counts exclude BN running statistics).
    pub(super) fn param_count(vs: &VarStore) -> i64 {
        vs.trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum()
    }

    /// Builds `kind` for `classes` classes on the CPU.
    pub(super) fn build_cpu(kind: ModelKind, classes: i64) -> (VarStore, Box<dyn Classifier>) {
        let vs = VarStore::new(Device::Cpu);
        let model = build(kind, &VitConfig::default(), &vs.root(), classes, 3);
        (vs, model)
    }

    /// Eval-mode full-precision logits for `n` random `side`×`side` images.
    pub(super) fn logits(model: &dyn Classifier, n: i64, side: i64) -> Tensor {
        let x = Tensor::randn([n, 3, side, side], (Kind::Float, Device::Cpu));
        tch::no_grad(|| model.forward(&x, false, Bits::FULL))
    }

    /// A train-mode forward and backward on `n` random images reaches every trainable
    /// parameter (in-place ReLUs must not break autograd).
    pub(super) fn check_backward(vs: &VarStore, model: &dyn Classifier, n: i64, side: i64) {
        let x = Tensor::randn([n, 3, side, side], (Kind::Float, Device::Cpu));
        let y = model.forward(&x, true, Bits::FULL);
        y.square().mean(Kind::Float).backward();
        for (name, t) in vs.variables() {
            assert_eq!(t.requires_grad(), t.grad().defined(), "{name}");
        }
    }

    /// Standard deviation of a parameter, by VarStore name.
    pub(super) fn std_of(vs: &VarStore, name: &str) -> f64 {
        vs.variables()[name].std(true).double_value(&[])
    }

    /// Weight+bias count of a linear or 1×1-conv classifier.
    pub(super) fn classifier_params(in_features: i64, classes: i64) -> i64 {
        in_features * classes + classes
    }

    /// Layer names in visit order, with roles.
    pub(super) fn layers(model: &mut dyn Classifier) -> Vec<(String, LayerRole)> {
        let mut out = Vec::new();
        model.visit_layers(&mut |l| out.push((l.name().to_string(), l.role())));
        out
    }

    /// Checks that the visit covers every conv/linear weight exactly once, starts at `first` and
    /// ends at the full-precision classifier `last`.
    pub(super) fn check_layers(vs: &VarStore, model: &mut dyn Classifier, first: &str, last: &str) {
        let layers = layers(model);
        assert_eq!(layers[0], (first.to_string(), LayerRole::Quantized));
        assert_eq!(
            layers.last().unwrap(),
            &(last.to_string(), LayerRole::FullPrecision)
        );
        assert!(layers[1..layers.len() - 1]
            .iter()
            .all(|(_, r)| *r == LayerRole::Quantized));
        let mut visited: Vec<String> = layers
            .into_iter()
            .map(|(n, _)| format!("{n}.weight"))
            .collect();
        let mut weights: Vec<String> = vs
            .variables()
            .into_iter()
            .filter(|(name, t)| name.ends_with(".weight") && t.dim() >= 2)
            .map(|(name, _)| name)
            .collect();
        visited.sort();
        weights.sort();
        assert_eq!(visited, weights);
    }

    #[test]
    fn names_round_trip() {
        use clap::ValueEnum;
        for kind in ModelKind::ALL {
            let name = kind.name();
            assert_eq!(name.parse::<ModelKind>().unwrap(), kind);
            assert_eq!(kind.to_string(), name);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<ModelKind>(&json).unwrap(), kind);
            assert_eq!(kind.to_possible_value().unwrap().get_name(), name);
            assert_eq!(
                <ModelKind as ValueEnum>::from_str(name, false).unwrap(),
                kind
            );
        }
        let err = "resnet19".parse::<ModelKind>().unwrap_err();
        assert!(
            err.contains("resnet18") && err.contains("squeezenet1_0"),
            "{err}"
        );
    }

    #[test]
    fn vit_config_serde_and_validation() {
        let c: VitConfig = serde_json::from_str(r#"{"dim": 96, "heads": 4}"#).unwrap();
        assert_eq!(
            c,
            VitConfig {
                dim: 96,
                heads: 4,
                ..Default::default()
            }
        );
        assert!(serde_json::from_str::<VitConfig>(r#"{"width": 3}"#).is_err());
        assert!(validate_vit(&c).is_ok());
        assert!(validate_vit(&VitConfig {
            heads: 5,
            ..Default::default()
        })
        .unwrap_err()
        .contains("divisible"));
        assert!(validate_vit(&VitConfig {
            patch: 5,
            ..Default::default()
        })
        .is_err());
        assert!(validate_vit(&VitConfig {
            depth: 0,
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn info_is_consistent() {
        for kind in ModelKind::ALL {
            let info = kind.info();
            assert!(info.min_input <= info.default_input, "{kind}");
            assert!(
                info.max_input.is_none_or(|m| m >= info.default_input),
                "{kind}"
            );
        }
    }

    #[test]
    fn full_precision_forward_is_bit_identical() {
        for kind in [ModelKind::Resnet20, ModelKind::Lenet, ModelKind::Vit] {
            let (_vs, model) = build_cpu(kind, 10);
            let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
            let (a, b) = tch::no_grad(|| {
                (
                    model.forward(&x, false, Bits::FULL),
                    model.forward(&x, false, Bits::FULL),
                )
            });
            assert!(a.equal(&b), "{kind}");
            // 8 bits quantizes (close to, not equal to, full precision); 32 bits is exact.
            // (ViT's head starts at zero, as torchvision's: its logits do not show it yet.)
            if kind == ModelKind::Vit {
                continue;
            }
            let q = tch::no_grad(|| model.forward(&x, false, Bits { fwd: 8, bwd: 8 }));
            assert!(!a.equal(&q), "{kind}: 8 bits should change the output");
            let rel = (&a - &q).abs().max().double_value(&[]) / a.abs().max().double_value(&[]);
            assert!(
                rel < 0.2,
                "{kind}: 8-bit output too far from full precision ({rel})"
            );
        }
    }

    #[test]
    fn train_and_eval_differ_with_batch_norm() {
        let (_vs, model) = build_cpu(ModelKind::Resnet20, 10);
        let x = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
        let (train, eval) = tch::no_grad(|| {
            (
                model.forward(&x, true, Bits::FULL),
                model.forward(&x, false, Bits::FULL),
            )
        });
        assert!(!train.allclose(&eval, 1e-4, 1e-4, false));
    }

    #[test]
    fn set_layer_roles_moves_full_precision() {
        let (_vs, mut model) = build_cpu(ModelKind::Lenet, 10);
        model.set_layer_roles(true, false);
        let roles: Vec<LayerRole> = layers(model.as_mut()).into_iter().map(|(_, r)| r).collect();
        use LayerRole::{FullPrecision as F, Quantized as Q};
        assert_eq!(roles, [F, Q, Q, Q, Q]);
        model.set_layer_roles(true, true);
        let roles: Vec<LayerRole> = layers(model.as_mut()).into_iter().map(|(_, r)| r).collect();
        assert_eq!(roles, [F, Q, Q, Q, F]);
    }

    #[test]
    fn layer_stats_record_macs() {
        let (_vs, mut model) = build_cpu(ModelKind::Lenet, 10);
        let _ = logits(model.as_ref(), 2, 32);
        let mut macs = Vec::new();
        model.visit_layers(&mut |l| macs.push(l.stats().macs_per_sample()));
        // conv1: 6·28·28 outputs × 3·5·5; conv2: 16·10·10 × 6·5·5; then the three fc layers.
        assert_eq!(
            macs,
            [
                6 * 28 * 28 * 75,
                16 * 10 * 10 * 150,
                400 * 120,
                120 * 84,
                84 * 10
            ]
        );
    }
}
