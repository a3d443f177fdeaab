//! Reading kernel attribute files under `--host-root`, with errors that name the file.
//!
//! Every source goes through here so that a container with the host's `/sys` and `/proc` mounted
//! somewhere else, and tests with fixture trees, run exactly the same code as a bare host.

use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

/// Why a kernel file could not be used. Always names the path: "unreadable" alone helps nobody.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}: not found")]
    NotFound(PathBuf),
    #[error("{0}: permission denied")]
    PermissionDenied(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot parse {value:?} as {what}")]
    Parse {
        path: PathBuf,
        value: String,
        what: &'static str,
    },
}

impl ReadError {
    pub fn is_permission(&self) -> bool {
        matches!(self, ReadError::PermissionDenied(_))
    }
}

/// The host's filesystem root as this process sees it (`/`, `/host`, or a fixture directory).
#[derive(Debug, Clone)]
pub struct HostRoot(PathBuf);

impl HostRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self(root.into())
    }

    /// `rel` may be written absolute (`/sys/class/powercap`); it is always taken under the root.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        let rel = rel.as_ref();
        self.0.join(rel.strip_prefix("/").unwrap_or(rel))
    }

    pub fn root(&self) -> &Path {
        &self.0
    }
}

fn io_error(path: &Path, e: std::io::Error) -> ReadError {
    match e.kind() {
        ErrorKind::NotFound => ReadError::NotFound(path.to_path_buf()),
        ErrorKind::PermissionDenied => ReadError::PermissionDenied(path.to_path_buf()),
        _ => ReadError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

/// Reads a small attribute file, trimmed.
pub fn read_string(path: &Path) -> Result<String, ReadError> {
    let mut buf = String::new();
    read_into(path, &mut buf)?;
    Ok(buf.trim().to_string())
}

/// Reads a file into a reused buffer (the hot path over thousands of `/proc/<pid>` files).
pub fn read_into(path: &Path, buf: &mut String) -> Result<(), ReadError> {
    buf.clear();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(buf))
        .map(|_| ())
        .map_err(|e| io_error(path, e))
}

/// Reads an unsigned integer attribute (`energy_uj`, `power1_input`, ...).
pub fn read_u64(path: &Path) -> Result<u64, ReadError> {
    let s = read_string(path)?;
    s.parse().map_err(|_| ReadError::Parse {
        path: path.to_path_buf(),
        value: s,
        what: "an unsigned integer",
    })
}

/// Reads a signed integer attribute (`current_now` is negative on some drivers while charging).
pub fn read_i64(path: &Path) -> Result<i64, ReadError> {
    let s = read_string(path)?;
    s.parse().map_err(|_| ReadError::Parse {
        path: path.to_path_buf(),
        value: s,
        what: "an integer",
    })
}

/// `Ok(None)` when the file does not exist: many attributes are optional by design.
pub fn optional<T>(r: Result<T, ReadError>) -> Result<Option<T>, ReadError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(ReadError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sorted directory entries (deterministic order for series and tests); empty when missing.
pub fn list_dir(path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(path)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_root_joins_absolute_paths() {
        let r = HostRoot::new("/host");
        assert_eq!(r.path("/sys/class"), PathBuf::from("/host/sys/class"));
        assert_eq!(r.path("proc/stat"), PathBuf::from("/host/proc/stat"));
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("energy_uj");
        std::fs::write(&p, "garbage\n").unwrap();
        let e = read_u64(&p).unwrap_err().to_string();
        assert!(e.contains("energy_uj") && e.contains("garbage"), "{e}");
        let missing = dir.path().join("nope");
        assert!(matches!(read_u64(&missing), Err(ReadError::NotFound(_))));
        assert_eq!(optional(read_u64(&missing)).unwrap(), None);
    }
}
