//! One flat fp32 buffer for all trainable parameters and one for their gradients.
//!
//! Every parameter tensor of the model is re-pointed (`set_data`) at a contiguous slice of
//! `params`, and every gradient at the same slice of `grads`. The optimizer then works on two
//! tensors instead of one per parameter, the sharded optimizer splits one buffer, and a
//! collective sends one buffer. Autograd accumulates into an existing gradient in place
//! (`grad += new` when the gradient is defined and grad mode is off), so after `backward` the
//! flat gradient is complete with no gather copy, and clearing it is a single `zero_`.
//!
//! For sharding, the buffers can be padded ([`FlatParams::with_padding`]) to a multiple of the
//! world size: the tail belongs to no parameter and stays zero in both buffers (its gradient is
//! zero, so SGD, Adam and AdamW leave it at zero).
//!
//! The buffers take the type of the first parameter. A parameter of another type (BatchNorm's
//! fp32 weight and bias in a half-precision replica) keeps its own storage and gradient; its
//! segment of the buffers is a copy: [`FlatParams::copy_apart_grads`] brings its gradient into
//! an fp32 master gradient, [`FlatParams::load_apart_params`] its value back from the master.
use tch::{nn::VarStore, Device, Kind, Tensor};

pub struct FlatParams {
    /// All trainable parameters, then zero padding: [`FlatParams::len`] elements.
    pub params: Tensor,
    /// Their gradients, same layout.
    pub grads: Tensor,
    /// The model's parameter tensors, in creation order (deterministic for a given model).
    vars: Vec<Tensor>,
    numels: Vec<i64>,
    /// Indices into `vars` of the parameters whose type differs from the buffers' (kept apart).
    apart: Vec<usize>,
}

impl FlatParams {
    pub fn new(vs: &VarStore) -> FlatParams {
        FlatParams::with_padding(vs, 1)
    }

    /// As [`FlatParams::new`], with the buffers' length rounded up to a multiple of `multiple`
    /// (e.g. `zero::ShardLayout::pad_multiple(world)`); the padding is zero.
    pub fn with_padding(vs: &VarStore, multiple: i64) -> FlatParams {
        FlatParams::with_layout(vs, multiple, false)
    }

    /// As [`FlatParams::with_padding`]; with `channels_last`, every 4-D parameter (a conv
    /// weight, O×I×H×W) and its gradient are viewed over their same slices with NHWC strides
    /// (I·H·W, 1, W·I, I), as `model.to(memory_format=torch.channels_last)` lays them out.
    /// The slices keep their offsets and lengths, so everything that works on the buffers
    /// (optimizers, sharding, collectives, checkpoints) is unchanged; only the order of the
    /// elements inside a conv weight's slice differs.
    pub fn with_layout(vs: &VarStore, multiple: i64, channels_last: bool) -> FlatParams {
        assert!(multiple > 0, "padding multiple must be positive");
        let mut vars = vs.trainable_variables();
        let device = vs.device();
        let numels: Vec<i64> = vars.iter().map(|v| v.numel() as i64).collect();
        let total: i64 = numels.iter().sum();
        let padded = (total + multiple - 1) / multiple * multiple;
        // The buffers take the type that holds most parameter elements: fp32, or fp16/bf16 for
        // a half-precision replica (whose BatchNorm parameters stay fp32, apart).
        let mut by_kind: Vec<(Kind, i64)> = Vec::new();
        for (v, &n) in vars.iter().zip(&numels) {
            match by_kind.iter_mut().find(|(k, _)| *k == v.kind()) {
                Some((_, total)) => *total += n,
                None => by_kind.push((v.kind(), n)),
            }
        }
        let kind = by_kind
            .iter()
            .max_by_key(|(_, n)| *n)
            .map_or(Kind::Float, |(k, _)| *k);
        let params = Tensor::zeros([padded], (kind, device));
        let grads = Tensor::zeros([padded], (kind, device));
        // Materialize every gradient (zeros) with one backward pass, then re-point it.
        let probe: Tensor = vars
            .iter()
            .map(|v| v.sum(Kind::Float))
            .fold(Tensor::zeros([], (Kind::Float, device)), |a, b| a + b);
        (probe * 0.0).backward();
        let mut apart = Vec::new();
        tch::no_grad(|| {
            let mut offset = 0;
            for (i, (v, &n)) in vars.iter_mut().zip(&numels).enumerate() {
                let shape = v.size();
                let view = |buffer: &Tensor| {
                    let slice = buffer.narrow(0, offset, n);
                    match (channels_last, shape.as_slice()) {
                        (true, &[_, c, h, w]) => {
                            slice.as_strided(shape.as_slice(), [c * h * w, 1, w * c, c], None)
                        }
                        _ => slice.view(shape.as_slice()),
                    }
                };
                let mut p_view = view(&params);
                p_view.copy_(v);
                if v.kind() == kind {
                    v.set_data(&p_view);
                    let mut g = v.grad();
                    g.set_data(&view(&grads));
                } else {
                    apart.push(i);
                }
                offset += n;
            }
        });
        let mut flat = FlatParams {
            params,
            grads,
            vars,
            numels,
            apart,
        };
        flat.zero_grads();
        flat
    }

    /// fp32 buffers with the same layout and values, tied to no model: the master weights of a
    /// half-precision replica (DeepSpeed's fp16 design). The optimizer steps these; the replica
    /// is refreshed from them.
    pub fn master_copy(&self) -> FlatParams {
        let params = self.params.to_kind(Kind::Float);
        // Parameters kept apart contribute their own values, not the buffers' rounded copy.
        let segments = self.segments();
        tch::no_grad(|| {
            for &i in &self.apart {
                let (offset, n) = segments[i];
                params
                    .narrow(0, offset, n)
                    .copy_(&self.vars[i].detach().flatten(0, -1));
            }
        });
        FlatParams {
            params,
            grads: Tensor::zeros([self.len()], (Kind::Float, self.device())),
            vars: Vec::new(),
            numels: self.numels.clone(),
            apart: Vec::new(),
        }
    }

    /// Parameters kept apart from the buffers (another type): how many.
    pub fn apart_len(&self) -> usize {
        self.apart.len()
    }

    /// Writes the gradients of the parameters kept apart into their segments of `into` (a
    /// master gradient of the same layout); the buffers' own segments there hold zeros.
    pub fn copy_apart_grads(&self, into: &Tensor) {
        let segments = self.segments();
        tch::no_grad(|| {
            for &i in &self.apart {
                let (offset, n) = segments[i];
                into.narrow(0, offset, n)
                    .copy_(&self.vars[i].grad().flatten(0, -1));
            }
        });
    }

    /// Sets the parameters kept apart from their segments of `from` (the master weights).
    pub fn load_apart_params(&mut self, from: &Tensor) {
        let segments = self.segments();
        tch::no_grad(|| {
            for &i in &self.apart {
                let (offset, n) = segments[i];
                let shape = self.vars[i].size();
                let src = from.narrow(0, offset, n).view(shape.as_slice());
                self.vars[i].copy_(&src);
            }
        });
    }

    /// (offset, length) of every parameter in the buffers.
    pub fn segments(&self) -> Vec<(i64, i64)> {
        let mut offset = 0;
        self.numels
            .iter()
            .map(|&n| {
                let seg = (offset, n);
                offset += n;
                seg
            })
            .collect()
    }

    /// Length of the buffers, padding included.
    pub fn len(&self) -> i64 {
        self.params.numel() as i64
    }

    /// Elements that belong to parameters (the buffers' length without padding).
    pub fn param_len(&self) -> i64 {
        self.numels.iter().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn device(&self) -> Device {
        self.params.device()
    }

    pub fn zero_grads(&mut self) {
        let _ = self.grads.zero_();
        for &i in &self.apart {
            let _ = self.vars[i].grad().zero_();
        }
    }

    /// Whether the 4-D parameters are viewed channels_last (and each gradient with the same
    /// strides as its parameter): what [`FlatParams::with_layout`] set up is still in place.
    pub fn is_channels_last(&self) -> bool {
        for (i, v) in self.vars.iter().enumerate() {
            if self.apart.contains(&i) || v.dim() != 4 {
                continue;
            }
            if !is_channels_last(v) || v.grad().stride() != v.stride() {
                return false;
            }
        }
        true
    }

    /// True when every parameter still shares storage with the flat buffers (nothing in the
    /// model replaced a parameter or a gradient behind our back).
    pub fn is_intact(&self) -> bool {
        let base_p = self.params.data_ptr() as usize;
        let base_g = self.grads.data_ptr() as usize;
        let mut offset = 0usize;
        for (i, (v, &n)) in self.vars.iter().zip(&self.numels).enumerate() {
            let at = offset * self.params.kind().elt_size_in_bytes();
            offset += n as usize;
            if self.apart.contains(&i) {
                // Kept apart: still a parameter of its own type with a gradient.
                if v.kind() == self.params.kind() || !v.grad().defined() {
                    return false;
                }
                continue;
            }
            if v.data_ptr() as usize != base_p + at || v.grad().data_ptr() as usize != base_g + at {
                return false;
            }
        }
        true
    }
}

/// Whether `t` (4-D) has channels_last strides, as `t.is_contiguous(torch.channels_last)`.
pub fn is_channels_last(t: &Tensor) -> bool {
    match (t.size().as_slice(), t.stride().as_slice()) {
        (&[_, c, h, w], &[sn, sc, sh, sw]) => {
            // Size-1 dimensions may carry any stride, as PyTorch's own check allows.
            (sc == 1 || c == 1) && (sw == c || w == 1) && (sh == w * c || h == 1) && sn == c * h * w
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::{self, Module, ModuleT};

    fn small_net(vs: &nn::Path) -> impl Module {
        nn::seq()
            .add(nn::linear(vs / "a", 5, 4, Default::default()))
            .add_fn(|x| x.tanh())
            .add(nn::linear(vs / "b", 4, 3, Default::default()))
    }

    #[test]
    fn backward_fills_the_flat_gradient_in_place() {
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let net = small_net(&vs.root());
        // Reference gradients from an ordinary backward.
        let x = Tensor::randn([7, 5], (Kind::Float, Device::Cpu));
        net.forward(&x).square().sum(Kind::Float).backward();
        let expected: Vec<Tensor> = vs
            .trainable_variables()
            .iter()
            .map(|v| v.grad().flatten(0, -1).copy())
            .collect();
        let before: Vec<Tensor> = vs.trainable_variables().iter().map(|v| v.copy()).collect();

        let mut flat = FlatParams::new(&vs);
        assert!(flat.is_intact());
        assert_eq!(flat.len(), 5 * 4 + 4 + 4 * 3 + 3);
        for (v, b) in vs.trainable_variables().iter().zip(&before) {
            assert!(v.equal(b), "values survive re-pointing");
        }
        for _ in 0..2 {
            flat.zero_grads();
            net.forward(&x).square().sum(Kind::Float).backward();
            assert!(flat.is_intact(), "autograd kept the flat gradient storage");
            let got = flat.grads.copy();
            assert!(got.allclose(&Tensor::cat(&expected, 0), 1e-6, 1e-6, false));
        }
        // An update of the flat buffer is seen by the model.
        tch::no_grad(|| {
            let _ = flat.params.fill_(0.0);
        });
        let y = net.forward(&x);
        assert_eq!(y.abs().sum(Kind::Float).double_value(&[]), 0.0);
    }

    /// A half replica whose last layer stays fp32 (as BatchNorm does): that parameter keeps its
    /// own storage and gradient, the master copy takes its exact values, and the master's
    /// update reaches it.
    #[test]
    fn parameters_of_another_type_are_kept_apart() {
        tch::manual_seed(0);
        let mut vs = VarStore::new(Device::Cpu);
        let _net = small_net(&vs.root());
        vs.set_kind(Kind::Half);
        let mut kept = vs.root().sub("b");
        kept.set_kind(Kind::Float);
        let mut flat = FlatParams::new(&vs);
        assert_eq!(flat.params.kind(), Kind::Half);
        assert_eq!(flat.apart_len(), 2, "b.weight and b.bias");
        assert!(flat.is_intact());
        let b_weight = vs.variables()["b.weight"].shallow_clone();
        // Its segment, by its place among the trainable variables.
        let i = vs
            .trainable_variables()
            .iter()
            .position(|t| t.data_ptr() == b_weight.data_ptr())
            .unwrap();
        let (offset, n) = flat.segments()[i];
        let master = flat.master_copy();
        let seg = |t: &Tensor| t.narrow(0, offset, n).view([3, 4]);
        assert!(
            seg(&master.params).equal(&b_weight.detach()),
            "exact in the master"
        );
        // (A toy net cannot feed half activations to an fp32 layer: gradients by hand.)
        let vars = vs.variables();
        let loss = vars["a.weight"].sum(Kind::Float)
            + (&b_weight * 3.0).sum(Kind::Float)
            + vars["b.bias"].sum(Kind::Float);
        loss.backward();
        assert!(b_weight.grad().eq(3.0).all().int64_value(&[]) == 1);
        let g = Tensor::zeros([flat.len()], (Kind::Float, Device::Cpu));
        flat.copy_apart_grads(&g);
        assert!(seg(&g).equal(&b_weight.grad()));
        // The buffers' own parameters (a.weight, a.bias) are not touched there.
        let a_len: i64 = vs
            .trainable_variables()
            .iter()
            .filter(|t| t.kind() == Kind::Half)
            .map(|t| t.numel() as i64)
            .sum();
        assert_eq!(
            g.count_nonzero(None).int64_value(&[]),
            b_weight.grad().count_nonzero(None).int64_value(&[])
                + vs.variables()["b.bias"]
                    .grad()
                    .count_nonzero(None)
                    .int64_value(&[])
        );
        assert_eq!(a_len, 24);
        let update = Tensor::full([flat.len()], 0.5, (Kind::Float, Device::Cpu));
        flat.load_apart_params(&update);
        assert!(b_weight.detach().eq(0.5).all().int64_value(&[]) == 1);
        flat.zero_grads();
        assert_eq!(
            b_weight.grad().abs().sum(Kind::Float).double_value(&[]),
            0.0
        );
    }

    #[test]
    fn padding_extends_both_buffers_with_zeros() {
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let net = small_net(&vs.root());
        let flat = FlatParams::with_padding(&vs, 16);
        assert_eq!(flat.param_len(), 39);
        assert_eq!(flat.len(), 48);
        assert!(flat.is_intact());
        let x = Tensor::randn([7, 5], (Kind::Float, Device::Cpu));
        net.forward(&x).square().sum(Kind::Float).backward();
        let tail = |t: &Tensor| t.narrow(0, 39, 9).abs().sum(Kind::Float).double_value(&[]);
        assert_eq!(tail(&flat.grads), 0.0);
        assert_eq!(tail(&flat.params), 0.0);
        assert!(
            flat.grads
                .narrow(0, 0, 39)
                .abs()
                .sum(Kind::Float)
                .double_value(&[])
                > 0.0
        );
        assert_eq!(FlatParams::with_padding(&vs, 39).len(), 39);
    }

    /// Conv weights viewed channels_last over their slices: autograd accumulates into the
    /// strided gradients in place (the buffers stay intact, the strides stay NHWC), the
    /// gradients match an NCHW model's, and the flat layout keeps each parameter's slice.
    #[test]
    fn channels_last_views_keep_the_flat_buffers() {
        let build = |channels_last: bool| {
            tch::manual_seed(3);
            let vs = VarStore::new(Device::Cpu);
            let root = vs.root();
            let net = nn::seq_t()
                .add(nn::conv2d(&root / "c1", 3, 8, 3, Default::default()))
                .add(nn::batch_norm2d(&root / "bn", 8, Default::default()))
                .add_fn(|x| x.relu())
                .add(nn::conv2d(&root / "c2", 8, 4, 3, Default::default()))
                .add_fn(|x| x.flatten(1, -1))
                .add(nn::linear(&root / "fc", 4 * 4 * 4, 5, Default::default()));
            let flat = FlatParams::with_layout(&vs, 4, channels_last);
            (vs, net, flat)
        };
        let x = Tensor::randn([6, 3, 8, 8], (Kind::Float, Device::Cpu));
        let xl = crate::engine::batch::to_channels_last(&x);
        let (_vs0, net0, mut flat0) = build(false);
        let (vs1, net1, mut flat1) = build(true);
        let conv = vs1.variables()["c1.weight"].shallow_clone();
        assert!(is_channels_last(&conv) && !conv.is_contiguous());
        assert_eq!(conv.stride(), [27, 1, 9, 3]);
        assert!(flat1.is_intact() && flat1.is_channels_last());
        assert!(
            !flat0.is_channels_last(),
            "an NCHW model's conv weights are not"
        );
        for _ in 0..2 {
            flat0.zero_grads();
            flat1.zero_grads();
            net0.forward_t(&x, true)
                .square()
                .sum(Kind::Float)
                .backward();
            net1.forward_t(&xl, true)
                .square()
                .sum(Kind::Float)
                .backward();
            assert!(
                flat1.is_intact(),
                "autograd accumulated into the strided gradients"
            );
            assert!(flat1.is_channels_last(), "and kept their strides");
            // Same values parameter by parameter (the buffers' element order differs inside a
            // conv weight's slice).
            for (a, b) in flat0.vars.iter().zip(&flat1.vars) {
                assert!(a.equal(b));
                assert!(a.grad().allclose(&b.grad(), 1e-5, 1e-5, false));
            }
        }
        // An update of the flat buffer reaches the strided parameter.
        tch::no_grad(|| {
            let _ = flat1.params.fill_(0.25);
        });
        assert!(conv.detach().eq(0.25).all().int64_value(&[]) == 1);
    }
}
