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
use tch::{nn::VarStore, Device, Kind, Tensor};

pub struct FlatParams {
    /// All trainable parameters, then zero padding: [`FlatParams::len`] elements.
    pub params: Tensor,
    /// Their gradients, same layout.
    pub grads: Tensor,
    /// The model's parameter tensors, in creation order (deterministic for a given model).
    vars: Vec<Tensor>,
    numels: Vec<i64>,
}

impl FlatParams {
    pub fn new(vs: &VarStore) -> FlatParams {
        FlatParams::with_padding(vs, 1)
    }

    /// As [`FlatParams::new`], with the buffers' length rounded up to a multiple of `multiple`
    /// (e.g. `zero::ShardLayout::pad_multiple(world)`); the padding is zero.
    pub fn with_padding(vs: &VarStore, multiple: i64) -> FlatParams {
        assert!(multiple > 0, "padding multiple must be positive");
        let mut vars = vs.trainable_variables();
        let device = vs.device();
        let numels: Vec<i64> = vars.iter().map(|v| v.numel() as i64).collect();
        let total: i64 = numels.iter().sum();
        let padded = (total + multiple - 1) / multiple * multiple;
        // The buffers take the parameters' type: fp32, or fp16/bf16 for a half-precision replica.
        let kind = vars.first().map_or(Kind::Float, |v| v.kind());
        let params = Tensor::zeros([padded], (kind, device));
        let grads = Tensor::zeros([padded], (kind, device));
        // Materialize every gradient (zeros) with one backward pass, then re-point it.
        let probe: Tensor = vars
            .iter()
            .map(|v| v.sum(Kind::Float))
            .fold(Tensor::zeros([], (Kind::Float, device)), |a, b| a + b);
        (probe * 0.0).backward();
        tch::no_grad(|| {
            let mut offset = 0;
            for (v, &n) in vars.iter_mut().zip(&numels) {
                let shape = v.size();
                let mut p_view = params.narrow(0, offset, n).view(shape.as_slice());
                p_view.copy_(v);
                v.set_data(&p_view);
                let mut g = v.grad();
                g.set_data(&grads.narrow(0, offset, n).view(shape.as_slice()));
                offset += n;
            }
        });
        let mut flat = FlatParams {
            params,
            grads,
            vars,
            numels,
        };
        flat.zero_grads();
        flat
    }

    /// fp32 buffers with the same layout and values, tied to no model: the master weights of a
    /// half-precision replica (DeepSpeed's fp16 design). The optimizer steps these; the replica
    /// is refreshed from them.
    pub fn master_copy(&self) -> FlatParams {
        FlatParams {
            params: self.params.to_kind(Kind::Float),
            grads: Tensor::zeros([self.len()], (Kind::Float, self.device())),
            vars: Vec::new(),
            numels: self.numels.clone(),
        }
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
    }

    /// True when every parameter still shares storage with the flat buffers (nothing in the
    /// model replaced a parameter or a gradient behind our back).
    pub fn is_intact(&self) -> bool {
        let base_p = self.params.data_ptr() as usize;
        let base_g = self.grads.data_ptr() as usize;
        let mut offset = 0usize;
        for (v, &n) in self.vars.iter().zip(&self.numels) {
            let at = offset * self.params.kind().elt_size_in_bytes();
            if v.data_ptr() as usize != base_p + at || v.grad().data_ptr() as usize != base_g + at {
                return false;
            }
            offset += n as usize;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::{self, Module};

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
}
