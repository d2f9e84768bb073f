//! Interpolation between latents (paper App. D.5).
//!
//! slerp computes θ per sample (ermongroup reduces over the whole batch) and
//! falls back to lerp when |cos θ| > 0.9995 (ermongroup gives NaN there).
use tch::{Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    #[default]
    Slerp,
    Lerp,
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "slerp" => Ok(Method::Slerp),
            "lerp" => Ok(Method::Lerp),
            _ => Err(format!(
                "unknown interpolation method {s:?} (expected slerp or lerp)"
            )),
        }
    }
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Slerp => "slerp",
            Method::Lerp => "lerp",
        }
    }
}

pub fn lerp(a: &Tensor, b: &Tensor, alpha: f64) -> Tensor {
    a * (1.0 - alpha) + b * alpha
}

/// Spherical interpolation, per sample along dim 0.
pub fn slerp(a: &Tensor, b: &Tensor, alpha: f64) -> Tensor {
    let n = a.size()[0];
    let fa = a.reshape([n, -1]).to_kind(Kind::Double);
    let fb = b.reshape([n, -1]).to_kind(Kind::Double);
    let mut rows = Vec::with_capacity(n as usize);
    for i in 0..n {
        let (x, y) = (fa.get(i), fb.get(i));
        let denom = x.norm().double_value(&[]) * y.norm().double_value(&[]);
        let cos = if denom > 0.0 {
            x.dot(&y).double_value(&[]) / denom
        } else {
            1.0
        };
        let row = if cos.abs() > 0.9995 {
            lerp(&x, &y, alpha)
        } else {
            let theta = cos.clamp(-1.0, 1.0).acos();
            let s = theta.sin();
            &x * (((1.0 - alpha) * theta).sin() / s) + &y * ((alpha * theta).sin() / s)
        };
        rows.push(row);
    }
    Tensor::stack(&rows, 0).reshape(a.size()).to_kind(a.kind())
}

pub fn interpolate(a: &Tensor, b: &Tensor, alpha: f64, method: Method) -> Tensor {
    match method {
        Method::Slerp => slerp(a, b, alpha),
        Method::Lerp => lerp(a, b, alpha),
    }
}

/// α_k = k/(K−1) for k = 0..K.
pub fn alphas(frames: usize) -> Vec<f64> {
    if frames <= 1 {
        return vec![0.0];
    }
    (0..frames)
        .map(|k| k as f64 / (frames - 1) as f64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_norm() {
        tch::manual_seed(0);
        let a = Tensor::randn([2, 1, 8, 8], (Kind::Float, tch::Device::Cpu));
        let b = Tensor::randn([2, 1, 8, 8], (Kind::Float, tch::Device::Cpu));
        assert!(slerp(&a, &b, 0.0).allclose(&a, 1e-5, 1e-5, false));
        assert!(slerp(&a, &b, 1.0).allclose(&b, 1e-5, 1e-5, false));
        // Midpoint of near-orthogonal Gaussians keeps the norm (lerp shrinks it).
        let m = slerp(&a, &b, 0.5).get(0).norm().double_value(&[]);
        let l = lerp(&a, &b, 0.5).get(0).norm().double_value(&[]);
        let na = a.get(0).norm().double_value(&[]);
        assert!((m - na).abs() / na < 0.15 && l < 0.85 * na, "{m} {l} {na}");
    }

    #[test]
    fn parallel_falls_back_to_lerp_without_nan() {
        let a = Tensor::ones([1, 1, 4, 4], (Kind::Float, tch::Device::Cpu));
        let r = slerp(&a, &(&a * 2.0), 0.5);
        assert!(r.isfinite().all().int64_value(&[]) == 1);
        assert!(r.allclose(&(&a * 1.5), 1e-6, 1e-6, false));
    }

    #[test]
    fn per_sample_theta() {
        // Row 0 parallel, row 1 orthogonal: each row follows its own θ.
        let a = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 0.0]).reshape([2, 1, 1, 2]);
        let b = Tensor::from_slice(&[2.0f32, 0.0, 0.0, 1.0]).reshape([2, 1, 1, 2]);
        let r = slerp(&a, &b, 0.5);
        let v = Vec::<f32>::try_from(r.reshape([-1])).unwrap();
        assert!((v[0] - 1.5).abs() < 1e-6 && v[1] == 0.0);
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert!((v[2] - h).abs() < 1e-6 && (v[3] - h).abs() < 1e-6, "{v:?}");
    }
}
