//! Which GPUs this machine offers, for the scheduler's GPU slots.

/// Device identifiers from `CUDA_VISIBLE_DEVICES` when it is set, else one per `nvidia-smi -L`
/// line, else none. `--gpus N` keeps the first N (or numbers 0..N when none were detected).
pub fn detect(requested: Option<usize>) -> Vec<String> {
    let found = from_env().unwrap_or_else(from_nvidia_smi);
    match requested {
        None => found,
        Some(n) if n <= found.len() => found[..n].to_vec(),
        Some(n) => (0..n).map(|i| i.to_string()).collect(),
    }
}

/// The identifiers exactly as written (indices or `GPU-…` UUIDs): each stage's own
/// `CUDA_VISIBLE_DEVICES` must name the same devices.
fn from_env() -> Option<Vec<String>> {
    let v = std::env::var("CUDA_VISIBLE_DEVICES").ok()?;
    let v = v.trim();
    if v.is_empty() || v == "-1" || v == "NoDevFiles" {
        return Some(Vec::new());
    }
    Some(
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

fn from_nvidia_smi() -> Vec<String> {
    let Ok(out) = std::process::Command::new("nvidia-smi").arg("-L").output() else {
        return Vec::new();
    };
    if !out.status.success() {
        return Vec::new();
    }
    let n = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("GPU "))
        .count();
    (0..n).map(|i| i.to_string()).collect()
}
