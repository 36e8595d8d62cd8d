//! Small fs helpers: the per-run scratch directory, copies, modes, listings.

use std::{
    ffi::OsStr,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{Context as _, Result};

/// Makes scratch names unique across threads of one process.
pub(super) fn unique_suffix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// A per-run scratch directory under target/vm-work, removed when dropped (kept with
/// LOCKTRACE_VM_KEEP=1, for debugging).
pub(super) struct WorkDir(PathBuf);

impl WorkDir {
    pub(super) fn new(base: &Path) -> Result<Self> {
        let dir = base.join(unique_suffix());
        let _ = fs::remove_dir_all(&dir); // left over by a crashed run with the same pid
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::env::var_os("LOCKTRACE_VM_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.0);
        } else {
            eprintln!("vm: work dir kept: {}", self.0.display());
        }
    }
}

pub(super) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

pub(super) fn copy_file(src: &Path, dst: &Path) -> Result<()> {
    if let Some(p) = dst.parent() {
        fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
    }
    fs::copy(src, dst)
        .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    Ok(())
}

pub(super) fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
    for entry in fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let entry = entry?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        if is_build_product(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let ty = fs::metadata(&from).with_context(|| format!("stat {}", from.display()))?;
        if ty.is_dir() {
            copy_dir(&from, &to)?;
        } else {
            copy_file(&from, &to)?;
        }
    }
    Ok(())
}

/// Artifacts of an earlier manual build in the scenario dir (possibly for another kernel):
/// never copied, always rebuilt.
fn is_build_product(name: &str) -> bool {
    const SUFFIXES: &[&str] = &[".ko", ".o", ".mod", ".mod.c", ".cmd", ".symvers", ".order"];
    name == "workload" || name == ".tmp_versions" || SUFFIXES.iter().any(|s| name.ends_with(s))
}

pub(super) fn list_ext(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension() == Some(OsStr::new(ext)))
        .collect();
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_products_are_skipped() {
        for n in [
            "lt_plain.ko",
            "lt_plain.o",
            "lt_plain.mod",
            "lt_plain.mod.c",
            ".lt_plain.o.cmd",
            "Module.symvers",
            "modules.order",
            "workload",
        ] {
            assert!(is_build_product(n), "{n}");
        }
        for n in [
            "lt_plain.c",
            "lt_plain.h",
            "Makefile",
            "Kbuild",
            "run.sh",
            "workload.c",
            "tracer-args",
        ] {
            assert!(!is_build_product(n), "{n}");
        }
    }
}
