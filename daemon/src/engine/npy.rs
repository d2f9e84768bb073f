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

/// Parses .npy bytes of little-endian float32 in C order (format 1.0 to 3.0) into the
/// shape and the values. Malformed input is an error, never a panic. (Hand-written: tch
/// reads .npy from files only, and this is the one reader the daemon needs.)
pub fn from_bytes(b: &[u8]) -> Result<(Vec<usize>, Vec<f32>), String> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (no \\x93NUMPY magic)".into());
    }
    let (hlen, start): (usize, usize) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(format!(".npy format version {v} is not supported")),
    };
    let header = b
        .get(start..start.saturating_add(hlen))
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("truncated or unreadable .npy header")?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        Some(header[at..].trim_start().strip_prefix(':')?.trim_start())
    };
    let descr = field("descr").ok_or("the .npy header has no 'descr'")?;
    if !(descr.starts_with("'<f4'") || descr.starts_with("'=f4'")) {
        let d = descr.split(',').next().unwrap_or(descr);
        return Err(format!("expected little-endian float32 ('<f4'), got {d}"));
    }
    if field("fortran_order").is_some_and(|f| f.starts_with("True")) {
        return Err("Fortran-ordered arrays are not supported; save with C order".into());
    }
    let shape_src = field("shape").ok_or("the .npy header has no 'shape'")?;
    let inner = shape_src
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("the .npy 'shape' is not a tuple")?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.parse::<usize>()
                .map_err(|_| format!("bad dimension {d:?} in 'shape'"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, d| a.checked_mul(*d))
        .ok_or("the .npy 'shape' is too large")?;
    let data = &b[start + hlen..];
    if data.len() != n.saturating_mul(4) {
        return Err(format!(
            "shape {shape:?} needs {} bytes of data, the file has {}",
            n.saturating_mul(4),
            data.len()
        ));
    }
    let values = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((shape, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_bytes_reads_what_to_bytes_writes_and_refuses_junk() {
        let t = Tensor::from_slice(&[1.5f32, -2.0, 0.25, 3.0, 4.0, 5.0]).reshape([1, 2, 3]);
        let (shape, v) = from_bytes(&to_bytes(&t)).unwrap();
        assert_eq!(
            (shape, v),
            (vec![1, 2, 3], vec![1.5, -2.0, 0.25, 3.0, 4.0, 5.0])
        );
        let good = to_bytes(&t);
        assert!(from_bytes(b"garbage").is_err());
        assert!(from_bytes(&good[..good.len() - 1])
            .unwrap_err()
            .contains("bytes"));
        assert!(from_bytes(&good[..20]).is_err());
        // Same-length edits of the header.
        let edit = |from: &[u8], to: &[u8]| {
            let mut b = good.clone();
            let at = b.windows(from.len()).position(|w| w == from).unwrap();
            b[at..at + to.len()].copy_from_slice(to);
            b
        };
        let f8 = from_bytes(&edit(b"<f4", b"<f8")).unwrap_err();
        assert!(f8.contains("float32"), "{f8}");
        let fortran = from_bytes(&edit(b"False", b"True ")).unwrap_err();
        assert!(fortran.contains("Fortran"), "{fortran}");
        // Every prefix of a good file is refused without a panic.
        for k in 0..good.len() {
            assert!(from_bytes(&good[..k]).is_err(), "{k}");
        }
    }

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
