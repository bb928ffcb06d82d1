//! One flat fp32 buffer for all trainable parameters and one for their gradients.
//!
//! Every parameter tensor of the model is re-pointed (`set_data`) at a contiguous slice of
//! `params`, and every gradient at the same slice of `grads`. The optimizer then works on two
//! tensors instead of one per parameter, the sharded optimizer splits one buffer, and a
//! collective sends one buffer. Autograd accumulates into an existing gradient in place
//! (`grad += new` when the gradient is defined and grad mode is off), so after `backward` the
//! flat gradient is complete with no gather copy, and clearing it is a single `zero_`.
use tch::{nn::VarStore, Device, Kind, Tensor};

pub struct FlatParams {
    pub params: Tensor,
    pub grads: Tensor,
    /// The model's parameter tensors, in creation order (deterministic for a given model).
    vars: Vec<Tensor>,
    numels: Vec<i64>,
}

impl FlatParams {
    pub fn new(vs: &VarStore) -> FlatParams {
        let mut vars = vs.trainable_variables();
        let device = vs.device();
        let numels: Vec<i64> = vars.iter().map(|v| v.numel() as i64).collect();
        let total: i64 = numels.iter().sum();
        let params = Tensor::zeros([total], (Kind::Float, device));
        let grads = Tensor::zeros([total], (Kind::Float, device));
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

    pub fn len(&self) -> i64 {
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
            let at = offset * 4;
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
}
