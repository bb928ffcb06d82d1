//! Which model a run trains: the kinds, what each accepts, and the ViT's shape. Pure data, so
//! configs, the CLI and the workbench read it without libtorch; `models` builds them.
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The architectures cptlab can train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// LeNet-5 of the PyTorch CIFAR-10 tutorial / DeepSpeed CIFAR example (32×32 input only).
    #[value(name = "lenet")]
    Lenet,
    /// AlexNet as torchvision builds it (alexnet).
    #[value(name = "alexnet")]
    Alexnet,
    /// VGG-11 with BatchNorm as torchvision builds it (vgg11_bn).
    #[value(name = "vgg11_bn")]
    Vgg11Bn,
    /// ResNet-18 as torchvision builds it (resnet18).
    #[value(name = "resnet18")]
    Resnet18,
    /// DenseNet-121 as torchvision builds it (densenet121).
    #[value(name = "densenet121")]
    Densenet121,
    /// SqueezeNet 1.0 as torchvision builds it (squeezenet1_0).
    #[serde(rename = "squeezenet1_0")]
    #[value(name = "squeezenet1_0")]
    Squeezenet1_0,
    /// Small pre-norm vision transformer, shaped by the model.vit table.
    #[value(name = "vit")]
    Vit,
    /// CIFAR ResNet-20 (He et al. 2016, option-A shortcuts).
    #[value(name = "resnet20")]
    Resnet20,
    /// CIFAR ResNet-56.
    #[value(name = "resnet56")]
    Resnet56,
    /// CIFAR ResNet-74.
    #[value(name = "resnet74")]
    Resnet74,
}

/// Input sizes an architecture supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelInfo {
    /// Smallest square input side the architecture accepts.
    pub min_input: i64,
    /// Input side the model is fed by default (32 for the CIFAR-native models, torchvision's 224
    /// for the ImageNet models).
    pub default_input: i64,
    /// Largest accepted side, for models whose input size is fixed by their parameter shapes
    /// (LeNet's 400-wide fc1; ViT's position embedding, sized for the default
    /// [`VitConfig::image_size`]).
    pub max_input: Option<i64>,
}

impl ModelKind {
    pub const ALL: [ModelKind; 10] = [
        ModelKind::Lenet,
        ModelKind::Alexnet,
        ModelKind::Vgg11Bn,
        ModelKind::Resnet18,
        ModelKind::Densenet121,
        ModelKind::Squeezenet1_0,
        ModelKind::Vit,
        ModelKind::Resnet20,
        ModelKind::Resnet56,
        ModelKind::Resnet74,
    ];

    /// The serde / CLI name.
    pub fn name(&self) -> &'static str {
        match self {
            ModelKind::Lenet => "lenet",
            ModelKind::Alexnet => "alexnet",
            ModelKind::Vgg11Bn => "vgg11_bn",
            ModelKind::Resnet18 => "resnet18",
            ModelKind::Densenet121 => "densenet121",
            ModelKind::Squeezenet1_0 => "squeezenet1_0",
            ModelKind::Vit => "vit",
            ModelKind::Resnet20 => "resnet20",
            ModelKind::Resnet56 => "resnet56",
            ModelKind::Resnet74 => "resnet74",
        }
    }

    /// Supported input sizes. Minimums of the torchvision models are torchvision's `min_size`.
    /// For ViT the input must equal `VitConfig::image_size`; this reports the default config.
    pub fn info(&self) -> ModelInfo {
        let (min_input, default_input, max_input) = match self {
            // conv5 → pool2 → conv5 → pool2 must leave 5×5 for the 16·5·5 = 400 inputs of fc1.
            ModelKind::Lenet => (32, 32, Some(35)),
            ModelKind::Alexnet => (63, 224, None),
            ModelKind::Vgg11Bn => (32, 224, None),
            ModelKind::Resnet18 => (1, 224, None),
            ModelKind::Densenet121 => (29, 224, None),
            ModelKind::Squeezenet1_0 => (21, 224, None),
            ModelKind::Vit => {
                let side = VitConfig::default().image_size;
                (side, side, Some(side))
            }
            ModelKind::Resnet20 | ModelKind::Resnet56 | ModelKind::Resnet74 => (1, 32, None),
        };
        ModelInfo {
            min_input,
            default_input,
            max_input,
        }
    }

    /// Whether the model is a CNN (`precision.channels_last = "auto"` lays its convolutions out
    /// NHWC on CUDA); the ViT's one patch convolution does not make it one.
    pub fn is_convolutional(&self) -> bool {
        !matches!(self, ModelKind::Vit)
    }

    /// Whether the model has BatchNorm layers (train and eval forward passes then differ).
    pub fn has_batch_norm(&self) -> bool {
        matches!(
            self,
            ModelKind::Vgg11Bn
                | ModelKind::Resnet18
                | ModelKind::Densenet121
                | ModelKind::Resnet20
                | ModelKind::Resnet56
                | ModelKind::Resnet74
        )
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ModelKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let valid: Vec<&str> = ModelKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown model '{s}'; valid models: {}", valid.join(", "))
            })
    }
}

/// Sizes of the ViT. Defaults: a 6-layer, 192-wide ViT on 4×4 patches of 32×32 images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VitConfig {
    /// Patch side; the patch embedding is a conv with kernel = stride = patch.
    pub patch: i64,
    /// Token width.
    pub dim: i64,
    /// Number of transformer blocks.
    pub depth: i64,
    /// Attention heads; must divide `dim`.
    pub heads: i64,
    /// Hidden width of the MLPs.
    pub mlp_dim: i64,
    /// Dropout after the embedding, the attention projection and both MLP layers.
    pub dropout: f64,
    /// Square input side the position embedding is sized for; must be a multiple of `patch`.
    pub image_size: i64,
}

impl Default for VitConfig {
    fn default() -> Self {
        VitConfig {
            patch: 4,
            dim: 192,
            depth: 6,
            heads: 3,
            mlp_dim: 384,
            dropout: 0.1,
            image_size: 32,
        }
    }
}

/// Checks a ViT config; [`build`] panics on a config this rejects.
pub fn validate_vit(c: &VitConfig) -> Result<(), String> {
    let positive = [
        ("patch", c.patch),
        ("dim", c.dim),
        ("depth", c.depth),
        ("heads", c.heads),
        ("mlp_dim", c.mlp_dim),
        ("image_size", c.image_size),
    ];
    if let Some((name, v)) = positive.iter().find(|(_, v)| *v <= 0) {
        return Err(format!("vit.{name} must be positive, got {v}"));
    }
    if c.dim % c.heads != 0 {
        return Err(format!(
            "vit.dim ({}) must be divisible by vit.heads ({})",
            c.dim, c.heads
        ));
    }
    if c.image_size % c.patch != 0 {
        return Err(format!(
            "vit.image_size ({}) must be a multiple of vit.patch ({})",
            c.image_size, c.patch
        ));
    }
    if !(0.0..1.0).contains(&c.dropout) {
        return Err(format!("vit.dropout must be in [0, 1), got {}", c.dropout));
    }
    Ok(())
}
