//! Small pre-norm vision transformer for CIFAR-sized images. Structure and init follow
//! torchvision's `VisionTransformer` (LayerNorm eps 1e-6, exact GELU, zero-initialised head),
//! with the attention's fused in-projection as a `QLinear` so it can be quantized.
use tch::nn::{self, Init, LayerNorm, LayerNormConfig, Module};
use tch::Tensor;

use super::{Classifier, VitConfig};
use crate::quant::{xavier_uniform, Bits, ConvOpts, LinearOpts, QConv2d, QLayer, QLinear};

fn layer_norm(p: nn::Path, dim: i64) -> LayerNorm {
    nn::layer_norm(
        p,
        vec![dim],
        LayerNormConfig {
            eps: 1e-6,
            ..Default::default()
        },
    )
}

/// Multi-head self-attention: fused qkv projection, scaled dot-product attention, output
/// projection (torchvision's `nn.MultiheadAttention` init: xavier in-projection, zero biases).
struct Attention {
    qkv: QLinear,
    proj: QLinear,
    heads: i64,
}

impl Attention {
    fn new(p: &nn::Path, dim: i64, heads: i64) -> Self {
        let zero_bias = Some(Init::Const(0.0));
        let qkv_opts = LinearOpts {
            weight_init: xavier_uniform(dim, 3 * dim),
            bias_init: zero_bias,
            ..Default::default()
        };
        Attention {
            qkv: QLinear::new(&p.sub("qkv"), dim, 3 * dim, qkv_opts),
            proj: QLinear::new(
                &p.sub("proj"),
                dim,
                dim,
                LinearOpts {
                    bias_init: zero_bias,
                    ..Default::default()
                },
            ),
            heads,
        }
    }

    fn forward(&self, x: &Tensor, bits: Bits) -> Tensor {
        let (n, t, d) = x.size3().expect("tokens [N, T, D]");
        let qkv = self
            .qkv
            .forward(x, bits)
            .view([n, t, 3, self.heads, d / self.heads])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let y = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            false,
            None,
            false,
        );
        self.proj
            .forward(&y.transpose(1, 2).reshape([n, t, d]), bits)
    }
}

/// MLP: Linear, GELU, dropout, Linear, dropout (torchvision `MLPBlock` init).
struct Mlp {
    fc1: QLinear,
    fc2: QLinear,
}

struct Block {
    ln_1: LayerNorm,
    attn: Attention,
    ln_2: LayerNorm,
    mlp: Mlp,
}

pub(super) struct Vit {
    patch_embed: QConv2d,
    class_token: Tensor,
    pos_embedding: Tensor,
    blocks: Vec<Block>,
    ln: LayerNorm,
    head: QLinear,
    dropout: f64,
}

impl Vit {
    pub(super) fn new(p: &nn::Path, c: &VitConfig, in_channels: i64, num_classes: i64) -> Self {
        let tokens = (c.image_size / c.patch).pow(2) + 1;
        // torchvision: trunc_normal_(std=√(1/fan_in)) truncated at ±2 (absolute), i.e. more than
        // 10σ for any realistic fan-in, so a plain normal has the same distribution.
        let fan_in = in_channels * c.patch * c.patch;
        let patch_opts = ConvOpts {
            stride: c.patch,
            weight_init: Init::Randn {
                mean: 0.0,
                stdev: (1.0 / fan_in as f64).sqrt(),
            },
            bias_init: Some(Init::Const(0.0)),
            ..Default::default()
        };
        let e = p.sub("encoder");
        let mlp_opts = |fan_in, fan_out| LinearOpts {
            weight_init: xavier_uniform(fan_in, fan_out),
            bias_init: Some(Init::Randn {
                mean: 0.0,
                stdev: 1e-6,
            }),
            ..Default::default()
        };
        let blocks = (0..c.depth)
            .map(|i| {
                let bp = e.sub("layers").sub(i);
                let mp = bp.sub("mlp");
                Block {
                    ln_1: layer_norm(bp.sub("ln_1"), c.dim),
                    attn: Attention::new(&bp.sub("attn"), c.dim, c.heads),
                    ln_2: layer_norm(bp.sub("ln_2"), c.dim),
                    mlp: Mlp {
                        fc1: QLinear::new(
                            &mp.sub("fc1"),
                            c.dim,
                            c.mlp_dim,
                            mlp_opts(c.dim, c.mlp_dim),
                        ),
                        fc2: QLinear::new(
                            &mp.sub("fc2"),
                            c.mlp_dim,
                            c.dim,
                            mlp_opts(c.mlp_dim, c.dim),
                        ),
                    },
                }
            })
            .collect();
        let zeros = LinearOpts {
            weight_init: Init::Const(0.0),
            bias_init: Some(Init::Const(0.0)),
            ..Default::default()
        };
        Vit {
            patch_embed: QConv2d::new(&p.sub("conv_proj"), in_channels, c.dim, c.patch, patch_opts),
            class_token: p.var("class_token", &[1, 1, c.dim], Init::Const(0.0)),
            pos_embedding: e.var(
                "pos_embedding",
                &[1, tokens, c.dim],
                Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            ),
            blocks,
            ln: layer_norm(e.sub("ln"), c.dim),
            head: QLinear::new(&p.sub("heads").sub("head"), c.dim, num_classes, zeros),
            dropout: c.dropout,
        }
    }
}

impl Classifier for Vit {
    fn forward(&self, x: &Tensor, train: bool, bits: Bits) -> Tensor {
        let n = x.size()[0];
        // [N, D, H/p, W/p] → [N, patches, D], class token first.
        let patches = self
            .patch_embed
            .forward(x, bits)
            .flatten(2, -1)
            .transpose(1, 2);
        assert_eq!(
            patches.size()[1] + 1,
            self.pos_embedding.size()[1],
            "ViT input {:?} does not match the image_size its position embedding was built for",
            x.size()
        );
        let cls = self.class_token.expand([n, -1, -1], false);
        let mut x =
            (Tensor::cat(&[cls, patches], 1) + &self.pos_embedding).dropout(self.dropout, train);
        for b in &self.blocks {
            let a = b
                .attn
                .forward(&b.ln_1.forward(&x), bits)
                .dropout(self.dropout, train);
            // Out of place: ln_1 saved x for its backward.
            x = &x + a;
            let h = b
                .mlp
                .fc1
                .forward(&b.ln_2.forward(&x), bits)
                .gelu("none")
                .dropout(self.dropout, train);
            x = &x + b.mlp.fc2.forward(&h, bits).dropout(self.dropout, train);
        }
        let cls = self.ln.forward(&x).select(1, 0);
        self.head.forward(&cls, bits)
    }

    fn visit_layers(&mut self, f: &mut dyn FnMut(&mut dyn QLayer)) {
        f(&mut self.patch_embed);
        for b in &mut self.blocks {
            f(&mut b.attn.qkv);
            f(&mut b.attn.proj);
            f(&mut b.mlp.fc1);
            f(&mut b.mlp.fc2);
        }
        f(&mut self.head);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::{build, ModelKind, VitConfig};
    use crate::quant::Bits;
    use tch::nn::VarStore;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn vit_params_shape_and_dropout() {
        let (vs, mut model) = build_cpu(ModelKind::Vit, 10);
        let c = VitConfig::default();
        let tokens = (c.image_size / c.patch).pow(2) + 1;
        let per_block = 2 * 2 * c.dim // two LayerNorms
            + (c.dim * 3 * c.dim + 3 * c.dim) + (c.dim * c.dim + c.dim)
            + (c.dim * c.mlp_dim + c.mlp_dim) + (c.mlp_dim * c.dim + c.dim);
        let expected = (3 * c.patch * c.patch * c.dim + c.dim)
            + c.dim
            + tokens * c.dim
            + c.depth * per_block
            + 2 * c.dim
            + (c.dim * 10 + 10);
        assert_eq!(param_count(&vs), expected);
        check_layers(&vs, model.as_mut(), "conv_proj", "heads.head");
        let info = ModelKind::Vit.info();
        assert_eq!(
            logits(model.as_ref(), 2, info.default_input).size(),
            [2, 10]
        );

        // The zero-initialised head hides everything else; give it weights to see dropout.
        let vs = VarStore::new(Device::Cpu);
        let c = VitConfig {
            dim: 32,
            depth: 2,
            heads: 4,
            mlp_dim: 64,
            ..Default::default()
        };
        let model = build(ModelKind::Vit, &c, &vs.root(), 10, 3);
        let mut head = vs.variables()["heads.head.weight"].shallow_clone();
        tch::no_grad(|| head.copy_(&Tensor::randn([10, 32], (Kind::Float, Device::Cpu))));
        let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let (eval, eval2, train) = tch::no_grad(|| {
            (
                model.forward(&x, false, Bits::FULL),
                model.forward(&x, false, Bits::FULL),
                model.forward(&x, true, Bits::FULL),
            )
        });
        assert!(eval.equal(&eval2));
        assert!(!eval.allclose(&train, 1e-4, 1e-4, false));
        check_backward(&vs, model.as_ref(), 2, 32);
    }
}
