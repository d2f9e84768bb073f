//! The gRPC contract of `ddimd` (package `ddim.v1`), generated at build time
//! from `proto/ddim/v1/ddim.proto` by protox + tonic-prost-build.

/// Package `ddim.v1`: messages, the `Ddim` client and server.
pub mod v1 {
    // Generated code: `JobEvent.event` holds a whole `Job` beside small variants.
    #![allow(clippy::large_enum_variant)]
    tonic::include_proto!("ddim.v1");
}

/// The encoded `FileDescriptorSet`, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ddim_descriptor.bin"));

impl v1::DecodeJob {
    /// The η values to decode with: `etas` when given, else the one `eta`.
    pub fn eta_values(&self) -> Vec<f32> {
        if self.etas.is_empty() {
            vec![self.eta]
        } else {
            self.etas.clone()
        }
    }
}

/// Summary of per-image errors (reconstruction MSE), shared by the daemon, its offline
/// CLI and the client that merges several jobs' results.
pub mod stats {
    /// The mean, the sample standard deviation and the standard error of the mean (both
    /// 0 for a single image; the mean is NaN for none).
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct ErrorStats {
        pub mean: f64,
        pub std: f64,
        pub sem: f64,
    }

    pub fn error_stats(v: &[f64]) -> ErrorStats {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let std = if v.len() < 2 {
            0.0
        } else {
            (v.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        };
        ErrorStats {
            mean,
            std,
            sem: if v.is_empty() { 0.0 } else { std / n.sqrt() },
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn error_stats_mean_std_sem() {
            let e = error_stats(&[1.0, 2.0, 3.0, 4.0]);
            assert_eq!(e.mean, 2.5);
            assert!((e.std - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
            assert!((e.sem - e.std / 2.0).abs() < 1e-12);
            let one = ErrorStats {
                mean: 0.5,
                std: 0.0,
                sem: 0.0,
            };
            assert_eq!(error_stats(&[0.5]), one);
            assert!(error_stats(&[]).mean.is_nan());
        }
    }
}

pub mod mix;
