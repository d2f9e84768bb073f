//! CUDA memory used by this process, for `GetStats`.
//!
//! tch exposes no allocator statistics, so the daemon asks `nvidia-smi` for
//! the memory of its own pid (what the driver charges to the process: the
//! caching allocator's reservations plus the CUDA context). 0 on CPU, or when
//! `nvidia-smi` is missing. Cached for a few seconds: a TUI may poll stats.
use std::sync::Mutex;
use std::time::{Duration, Instant};

const CACHE: Duration = Duration::from_secs(5);

static LAST: Mutex<Option<(Instant, u64)>> = Mutex::new(None);

/// Sums the `used_memory` (MiB) of `pid` in
/// `nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits`.
pub fn parse_compute_apps(out: &str, pid: u32) -> u64 {
    out.lines()
        .filter_map(|l| {
            let mut f = l.split(',').map(str::trim);
            let p: u32 = f.next()?.parse().ok()?;
            let mib: u64 = f.next()?.parse().ok()?;
            (p == pid).then_some(mib * 1024 * 1024)
        })
        .sum()
}

/// Bytes of device memory this process holds; 0 when not on CUDA. Blocking.
pub fn memory_bytes(device: &str) -> u64 {
    if !device.starts_with("cuda") {
        return 0;
    }
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((at, v)) = *last {
        if at.elapsed() < CACHE {
            return v;
        }
    }
    let v = std::process::Command::new("nvidia-smi")
        .args([
            "--query-compute-apps=pid,used_memory",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| parse_compute_apps(&String::from_utf8_lossy(&o.stdout), std::process::id()))
        .unwrap_or(0);
    *last = Some((Instant::now(), v));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_this_pid_only() {
        let out = "1234, 500\n999, 7\n1234, 12\nbad line\n";
        assert_eq!(parse_compute_apps(out, 1234), 512 * 1024 * 1024);
        assert_eq!(parse_compute_apps(out, 5), 0);
        assert_eq!(memory_bytes("cpu"), 0);
    }
}
