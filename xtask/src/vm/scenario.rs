//! The scenario directory (tests/scenarios/README.md): its checks, and the build of its
//! module and workload against the guest kernel.

use std::{
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{ensure, Context as _, Result};

use super::{fs_helpers::list_ext, kernels::Kernel};

#[derive(Debug)]
pub(super) struct Scenario {
    pub(super) dir: PathBuf,
    pub(super) has_kmod: bool,
    pub(super) has_workload: bool,
}

impl Scenario {
    pub(super) fn load(dir: &Path) -> Result<Self> {
        let dir = dir
            .canonicalize()
            .with_context(|| format!("scenario directory {}", dir.display()))?;
        ensure!(
            dir.is_dir(),
            "scenario {} is not a directory",
            dir.display()
        );
        ensure!(
            dir.join("run.sh").is_file(),
            "scenario {} has no run.sh (required; see tests/scenarios/README.md)",
            dir.display()
        );
        let kmod = dir.join("kmod");
        let has_kmod = kmod.is_dir();
        if has_kmod {
            let has_makefile = kmod.join("Makefile").is_file() || kmod.join("Kbuild").is_file();
            ensure!(
                has_makefile,
                "{} has no Makefile or Kbuild (needed to build the module)",
                kmod.display()
            );
            let has_c = fs::read_dir(&kmod)
                .with_context(|| format!("reading {}", kmod.display()))?
                .filter_map(|e| e.ok())
                .any(|e| e.path().extension() == Some(OsStr::new("c")));
            ensure!(has_c, "{} contains no .c file", kmod.display());
        }
        let args = dir.join("tracer-args");
        if args.exists() {
            let text =
                fs::read_to_string(&args).with_context(|| format!("reading {}", args.display()))?;
            ensure!(
                text.trim_end_matches('\n').lines().count() <= 1,
                "{} must hold a single line of arguments",
                args.display()
            );
        }
        Ok(Self {
            has_kmod,
            has_workload: dir.join("workload.c").is_file(),
            dir,
        })
    }
}

/// Builds the out-of-tree module(s) in `dir` against `kernel` (kbuild `M=`).
pub(super) fn build_module(dir: &Path, kernel: &Kernel) -> Result<()> {
    let out = Command::new("make")
        .arg("-C")
        .arg(&kernel.build_dir)
        .arg(format!("M={}", dir.display()))
        .arg("modules")
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .output()
        .context("running make for an out-of-tree module (is make installed?)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "make M={} against {} failed ({}):\n{text}",
        dir.display(),
        kernel.release,
        out.status
    );
    for line in text.lines().filter(|l| l.contains("warning:")) {
        eprintln!("vm: module build: {line}");
    }
    let kos = list_ext(dir, "ko")?;
    ensure!(
        !kos.is_empty(),
        "building {} produced no .ko",
        dir.display()
    );
    Ok(())
}

/// Builds kmod/*.ko and ./workload inside the staged copy `dst` of the scenario.
pub(super) fn build_scenario(scenario: &Scenario, dst: &Path, kernel: &Kernel) -> Result<()> {
    if scenario.has_kmod {
        build_module(&dst.join("kmod"), kernel)
            .with_context(|| format!("building {}/kmod", scenario.dir.display()))?;
    }
    if scenario.has_workload {
        let out = Command::new("gcc")
            .args(["-static", "-O2", "-pthread", "-Wall", "-o"])
            .arg(dst.join("workload"))
            .arg(dst.join("workload.c"))
            .output()
            .context("running gcc for workload.c")?;
        ensure!(
            out.status.success(),
            "gcc -static workload.c failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let warnings = String::from_utf8_lossy(&out.stderr);
        if !warnings.trim().is_empty() {
            eprintln!("vm: workload.c: {warnings}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_validation() {
        let base = std::env::temp_dir().join(format!("lt-vm-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(&base).unwrap();
        // no run.sh
        assert!(Scenario::load(&base).is_err());
        fs::write(base.join("run.sh"), "true\n").unwrap();
        let s = Scenario::load(&base).unwrap();
        assert!(!s.has_kmod && !s.has_workload);
        // kmod/ without a Makefile
        fs::create_dir(base.join("kmod")).unwrap();
        fs::write(base.join("kmod/m.c"), "").unwrap();
        assert!(Scenario::load(&base).is_err());
        fs::write(base.join("kmod/Kbuild"), "obj-m := m.o\n").unwrap();
        fs::write(base.join("workload.c"), "int main(){}\n").unwrap();
        let s = Scenario::load(&base).unwrap();
        assert!(s.has_kmod && s.has_workload);
        // tracer-args must be one line
        fs::write(base.join("tracer-args"), "--a\n--b\n").unwrap();
        assert!(Scenario::load(&base).is_err());
        fs::write(base.join("tracer-args"), "--a --b\n").unwrap();
        assert!(Scenario::load(&base).is_ok());
        fs::remove_dir_all(&base).unwrap();
        // the repo's own scenario is valid
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/scenarios/plain-mutex");
        let s = Scenario::load(&repo).unwrap();
        assert!(s.has_kmod && s.has_workload);
    }
}
