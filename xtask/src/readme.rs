//! Keeps the README's demo output true: its report must be the one the nouveau-svmm scenario
//! gives on 6.12 today. Compared modulo what legitimately varies from run to run or with a
//! Debian kernel update: pids, code offsets, and the frames inside the kernel itself. The
//! lockdep-form sections, the cycle and its id, the lock lines and every module frame must
//! match.
use anyhow::{bail, Context, Result};

/// The README's demo report: from the line after `demo: kernel … locktrace's report:` up to
/// the end of the first cycle (`*** DEADLOCK ***`).
fn readme_demo_report(readme: &str) -> Result<Vec<&str>> {
    let mut lines = readme.lines();
    lines
        .by_ref()
        .find(|line| line.starts_with("demo: kernel ") && line.ends_with("locktrace's report:"))
        .context("README has no `demo: kernel … locktrace's report:` line (the demo block)")?;
    first_cycle(lines).context("README's demo block has no complete `*** DEADLOCK ***` report")
}

/// The lines of a report's first cycle, from its `=====` rule to `*** DEADLOCK ***`.
fn first_cycle<'a>(lines: impl Iterator<Item = &'a str>) -> Option<Vec<&'a str>> {
    let mut cycle = Vec::new();
    for line in lines.skip_while(|line| !line.starts_with("=====")) {
        cycle.push(line);
        if line.trim() == "*** DEADLOCK ***" {
            return Some(cycle);
        }
    }
    None
}

/// A report line as compared: offsets (`+0x44`) and pids (`workload/403`) masked; kernel
/// frames (indented, no `[module]`) dropped, as they follow the Debian kernel build.
fn comparable(line: &str) -> Option<String> {
    let trimmed = line.trim_end();
    let token = trimmed.trim_start();
    // `       unmap_vmas+0x183`; a module frame has ` [module]` after it.
    let is_kernel_frame =
        line.starts_with("       ") && !token.contains(' ') && token.contains("+0x");
    if is_kernel_frame || trimmed.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(trimmed.len());
    let mut rest = trimmed;
    while let Some(at) = rest.find("+0x") {
        out.push_str(&rest[..at]);
        out.push_str("+OFF");
        rest = rest[at + 3..].trim_start_matches(|c: char| c.is_ascii_hexdigit());
    }
    out.push_str(rest);
    if let Some(task) = out.strip_suffix(" is trying to acquire lock:") {
        let comm = task.rsplit_once('/').map_or(task, |(comm, _pid)| comm);
        out = format!("{comm}/PID is trying to acquire lock:");
    }
    Some(out)
}

/// Checks that the README's demo report is `report` (a report.txt of nouveau-svmm on 6.12).
pub fn check_demo_report(readme: &str, report: &str) -> Result<()> {
    let pasted: Vec<String> = readme_demo_report(readme)?
        .into_iter()
        .filter_map(comparable)
        .collect();
    let actual: Vec<String> = first_cycle(report.lines())
        .context("the run's report.txt has no complete cycle report")?
        .into_iter()
        .filter_map(comparable)
        .collect();
    if let Some(index) =
        (0..pasted.len().max(actual.len())).find(|&i| pasted.get(i) != actual.get(i))
    {
        bail!(
            "README's demo output is out of date: line {} (offsets, pids and kernel frames masked) \
             reads `{}`, today's run gives `{}` — paste a fresh `cargo xtask demo`",
            index + 1,
            pasted.get(index).map_or("(end)", String::as_str),
            actual.get(index).map_or("(end)", String::as_str),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "\n======================================================\n\
        WARNING: possible circular locking dependency detected\n\
        cyc-bf422fb61f56b9d1\n\
        ------------------------------------------------------\n\
        workload/403 is trying to acquire lock:\n\
        (&vmm->mutex){write}, at: nvkm_uvmm_mthd.constprop.0+0x44 [nouveau_svmm]\n\
        \n\
        -> #0 (&vmm->mutex){write}:\n       mutex_lock+0x9\n       \
        nvkm_uvmm_mthd.constprop.0+0x44 [nouveau_svmm]\n       unmap_vmas+0x183\n\
        \n       CPU0                    CPU1\n                               lock(&svmm->mutex);\n\
        \n *** DEADLOCK ***\n\nsummary: 97 classes\n";

    fn readme_with(report: &str) -> String {
        format!(
            "# x\n```\n$ cargo xtask demo\n\
             demo: kernel 6.12.117+deb12-amd64 — locktrace's report:\n{report}```\n"
        )
    }

    #[test]
    fn the_same_report_from_another_run_and_kernel_build_agrees() {
        let rerun = REPORT
            .replace("workload/403", "workload/77")
            .replace("+0x44 [", "+0x48 [")
            .replace(
                "unmap_vmas+0x183",
                "unmap_vmas+0x190\n       vms_clear_ptes+0x10b",
            );
        check_demo_report(&readme_with(REPORT), &rerun).unwrap();
    }

    #[test]
    fn a_lost_module_frame_or_another_cycle_is_out_of_date() {
        let readme = readme_with(REPORT);
        let short = REPORT.replace(
            "       nvkm_uvmm_mthd.constprop.0+0x44 [nouveau_svmm]\n",
            "",
        );
        let err = check_demo_report(&readme, &short).unwrap_err().to_string();
        assert!(err.contains("nvkm_uvmm_mthd"), "{err}");
        let other = REPORT.replace("cyc-bf422fb61f56b9d1", "cyc-0000000000000001");
        assert!(check_demo_report(&readme, &other).is_err());
        let scenario = REPORT.replace("       lock(&svmm->mutex)", "       lock(&vmm->mutex)");
        assert!(check_demo_report(&readme, &scenario).is_err());
        assert!(check_demo_report(&readme, "no cycle here\n").is_err());
        assert!(check_demo_report("# no demo block\n", REPORT).is_err());
    }
}
