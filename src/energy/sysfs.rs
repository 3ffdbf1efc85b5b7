//! Reading sysfs files under `WATTLE_SYSFS_ROOT` with errors that say what is wrong and how to fix it.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// `$WATTLE_SYSFS_ROOT`, default `/sys`.
pub(crate) fn root() -> PathBuf {
    std::env::var_os("WATTLE_SYSFS_ROOT")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/sys"))
}

/// The entries of `dir` (sorted by name), or none when it is missing or unreadable.
pub(crate) fn entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<(String, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    v.sort_by_key(|a| natural_key(&a.0));
    v
}

/// Sorts `hwmon10` after `hwmon9`.
fn natural_key(s: &str) -> (String, u64) {
    let digits: String = s.chars().rev().take_while(|c| c.is_ascii_digit()).collect();
    let n = digits.chars().rev().collect::<String>();
    (s[..s.len() - n.len()].to_string(), n.parse().unwrap_or(0))
}

/// The trimmed text of a file, or why it cannot be read (with the fix for permissions).
pub(crate) fn read_str(path: &Path) -> Result<String, String> {
    match std::fs::read(path) {
        Ok(b) => match String::from_utf8(b) {
            Ok(s) => Ok(s.trim().to_string()),
            Err(_) => Err(format!("{} is not text", path.display())),
        },
        Err(e) if e.kind() == ErrorKind::PermissionDenied => Err(format!(
            "{} is not readable by this user (Linux ≥ 5.10 makes energy counters root-only); \
             fix: `sudo chmod o+r {}` or a udev rule such as \
             `ACTION==\"add\", SUBSYSTEM==\"powercap\", RUN+=\"/bin/chmod o+r /sys%p/energy_uj\"`",
            path.display(),
            path.display()
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(format!("{} is missing", path.display())),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// A file holding one unsigned integer.
pub(crate) fn read_u64(path: &Path) -> Result<u64, String> {
    let s = read_str(path)?;
    s.parse::<u64>()
        .map_err(|_| format!("{} holds `{}`, not a number", path.display(), short(&s)))
}

/// A file holding one signed integer (current_now may be negative while discharging).
pub(crate) fn read_i64(path: &Path) -> Result<i64, String> {
    let s = read_str(path)?;
    s.parse::<i64>()
        .map_err(|_| format!("{} holds `{}`, not a number", path.display(), short(&s)))
}

fn short(s: &str) -> String {
    let mut t: String = s.chars().take(24).collect();
    if s.chars().count() > 24 {
        t.push('…');
    }
    t
}
