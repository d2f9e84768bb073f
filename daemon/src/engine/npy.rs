//! .npy files of float32 [N, C, H, W] tensors in model space [−1, 1].
//! Files go through tch (`Tensor::read_npy` / `write_npy`); `to_bytes` writes
//! the same format in memory for the daemon's export RPC.
use std::path::Path;
use tch::{Kind, Tensor};

use super::{first_line, EngineError};

/// Reads a float32 .npy of rank 4 ([C, H, W] is taken as [1, C, H, W]).
pub fn read(path: &Path) -> Result<Tensor, EngineError> {
    if !path.is_file() {
        return Err(EngineError::InvalidInput(format!(
            "{}: no such file",
            path.display()
        )));
    }
    let t = Tensor::read_npy(path).map_err(|e| {
        EngineError::InvalidInput(format!(
            "{}: not a readable .npy file ({})",
            path.display(),
            first_line(&e.to_string())
        ))
    })?;
    if t.kind() != Kind::Float {
        return Err(EngineError::InvalidInput(format!(
            "{}: expected float32 data, got {:?}",
            path.display(),
            t.kind()
        )));
    }
    match t.dim() {
        4 => Ok(t),
        3 => Ok(t.unsqueeze(0)),
        d => Err(EngineError::InvalidInput(format!(
            "{}: expected shape [N, C, H, W], got rank {d} {:?}",
            path.display(),
            t.size()
        ))),
    }
}

pub fn write(path: &Path, t: &Tensor) -> Result<(), EngineError> {
    t.to_device(tch::Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous()
        .write_npy(path)
        .map_err(|e| {
            EngineError::Io(format!(
                "{}: {}",
                path.display(),
                first_line(&e.to_string())
            ))
        })
}

/// The .npy (format 1.0) bytes of a float32 tensor.
pub fn to_bytes(t: &Tensor) -> Vec<u8> {
    let t = t
        .to_device(tch::Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous();
    let shape = t.size();
    let dims = shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let dims = if shape.len() == 1 {
        format!("{dims},")
    } else {
        dims
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}");
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let data = Vec::<f32>::try_from(t.reshape([-1])).unwrap_or_default();
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_back_through_tch() {
        let t = Tensor::arange(12, (Kind::Float, tch::Device::Cpu)).reshape([1, 3, 2, 2]) / 7.0;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        std::fs::write(&p, to_bytes(&t)).unwrap();
        let back = read(&p).unwrap();
        assert!(back.equal(&t));
        write(&p, &t).unwrap();
        assert!(read(&p).unwrap().equal(&t));
    }

    #[test]
    fn rejects_garbage_and_wrong_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.npy");
        std::fs::write(&p, b"not numpy").unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("g.npy"));
        Tensor::arange(4, (Kind::Int64, tch::Device::Cpu))
            .reshape([1, 1, 2, 2])
            .write_npy(&p)
            .unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("float32"));
        assert!(read(&dir.path().join("missing.npy"))
            .unwrap_err()
            .to_string()
            .contains("no such file"));
    }
}
