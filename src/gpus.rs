//! Which GPUs this machine offers, for the scheduler's GPU slots.

/// Device ids from `CUDA_VISIBLE_DEVICES` when it is set, else one per `nvidia-smi -L` line,
/// else none. `--gpus N` keeps the first N (or numbers 0..N when none were detected).
pub fn detect(requested: Option<usize>) -> Vec<u32> {
    let found = from_env().unwrap_or_else(from_nvidia_smi);
    match requested {
        None => found,
        Some(n) if n <= found.len() => found[..n].to_vec(),
        Some(n) => (0..n as u32).collect(),
    }
}

fn from_env() -> Option<Vec<u32>> {
    let v = std::env::var("CUDA_VISIBLE_DEVICES").ok()?;
    let v = v.trim();
    if v.is_empty() || v == "-1" || v == "NoDevFiles" {
        return Some(Vec::new());
    }
    let parts: Vec<&str> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let ids: Vec<u32> = parts.iter().filter_map(|p| p.parse().ok()).collect();
    Some(if ids.len() == parts.len() {
        ids
    } else {
        (0..parts.len() as u32).collect()
    })
}

fn from_nvidia_smi() -> Vec<u32> {
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
    (0..n as u32).collect()
}
