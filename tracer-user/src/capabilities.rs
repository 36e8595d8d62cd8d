//! What this kernel allows: the probe behind `locktrace doctor` and behind every attach
//! decision of `locktrace trace`.
use std::{fs, path::Path};

use aya::{programs::FEntry, Btf};

/// One capability, whether it is there, and why (or why not).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Capability {
    pub name: &'static str,
    pub available: bool,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct Capabilities {
    pub privileged: Capability,
    pub btf: Capability,
    pub fentry: Capability,
    pub kprobes: Capability,
    pub uprobes: Capability,
    pub tracepoints: Capability,
    pub lockdep: Capability,
}

impl Capabilities {
    pub fn all(&self) -> [&Capability; 7] {
        [
            &self.privileged,
            &self.btf,
            &self.fentry,
            &self.kprobes,
            &self.uprobes,
            &self.tracepoints,
            &self.lockdep,
        ]
    }
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability bits of this process.
fn effective_capabilities() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("CapEff:"))
                .and_then(|bits| u64::from_str_radix(bits.trim(), 16).ok())
        })
        .unwrap_or(0)
}

pub fn privileges() -> Capability {
    let caps = effective_capabilities();
    let has = |bit: u32| caps & (1 << bit) != 0;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let (available, detail) = if has(CAP_SYS_ADMIN) {
        (true, format!("euid {euid}, CAP_SYS_ADMIN"))
    } else if has(CAP_BPF) && has(CAP_PERFMON) {
        (true, format!("euid {euid}, CAP_BPF + CAP_PERFMON"))
    } else {
        (
            false,
            format!("euid {euid} without CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN): run with sudo"),
        )
    };
    Capability {
        name: "privileges",
        available,
        detail,
    }
}

fn path_capability(name: &'static str, path: &str, yes: &str, no: &str) -> Capability {
    let available = Path::new(path).exists();
    let detail = if available { yes } else { no };
    Capability {
        name,
        available,
        detail: detail.to_string(),
    }
}

/// Probe everything. `ebpf` is the loaded tracer object, used to try an fentry load.
pub fn probe(ebpf: Option<&mut aya::Ebpf>) -> Capabilities {
    ensure_tracefs();
    let btf = crate::kernel_btf::aya_btf();
    let fentry = match (&btf, ebpf) {
        (Err(err), _) => Capability {
            name: "fentry",
            available: false,
            detail: format!("no kernel BTF ({err})"),
        },
        (Ok(_), None) => Capability {
            name: "fentry",
            available: false,
            detail: "not checked: the eBPF object could not be loaded (privileges?)".into(),
        },
        (Ok(btf), Some(ebpf)) => fentry_capability(ebpf, btf),
    };
    Capabilities {
        privileged: privileges(),
        btf: match &btf {
            Ok(_) => Capability {
                name: "btf",
                available: true,
                detail: "/sys/kernel/btf/vmlinux present".into(),
            },
            Err(err) => Capability {
                name: "btf",
                available: false,
                detail: err.to_string(),
            },
        },
        fentry,
        kprobes: path_capability(
            "kprobes",
            "/sys/bus/event_source/devices/kprobe",
            "kprobe PMU present",
            "no kprobe PMU: this kernel was built without CONFIG_KPROBES",
        ),
        uprobes: path_capability(
            "uprobes",
            "/sys/bus/event_source/devices/uprobe",
            "uprobe PMU present",
            "no uprobe PMU: this kernel was built without CONFIG_UPROBE_EVENTS",
        ),
        tracepoints: tracepoint_capability(),
        lockdep: path_capability(
            "lockdep",
            "/proc/lockdep",
            "/proc/lockdep present: a debug kernel (lockdep itself also reports here)",
            "no /proc/lockdep: a production kernel without CONFIG_LOCKDEP (locktrace's case)",
        ),
    }
}

fn fentry_capability(ebpf: &mut aya::Ebpf, btf: &Btf) -> Capability {
    let result = (|| -> Result<(), String> {
        let program: &mut FEntry = ebpf
            .program_mut("capability_fentry")
            .ok_or("capability_fentry missing from the object")?
            .try_into()
            .map_err(|err| format!("{err}"))?;
        program
            .load("do_nanosleep", btf)
            .map_err(|err| error_chain(&err))?;
        program.unload().map_err(|err| error_chain(&err))
    })();
    match result {
        Ok(()) => Capability {
            name: "fentry",
            available: true,
            detail: "an fentry program loaded (BPF trampolines work)".into(),
        },
        Err(err) => Capability {
            name: "fentry",
            available: false,
            detail: format!("load failed: {err}"),
        },
    }
}

/// Mount tracefs at its usual place when nothing is there yet (tracepoint attach needs it).
pub fn ensure_tracefs() {
    let target = c"/sys/kernel/tracing";
    if Path::new("/sys/kernel/tracing/events").exists() || !privileges().available {
        return;
    }
    // SAFETY: plain mount(2) with valid NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        log::debug!("mounting tracefs: {}", std::io::Error::last_os_error());
    }
}

fn tracepoint_capability() -> Capability {
    let roots = [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ];
    match roots
        .iter()
        .find(|root| Path::new(root).join("sched").exists())
    {
        Some(root) => Capability {
            name: "tracepoints",
            available: true,
            detail: format!("{root} present"),
        },
        None => Capability {
            name: "tracepoints",
            available: false,
            detail: "tracefs not mounted or no tracepoint events \
                     (mount -t tracefs nodev /sys/kernel/tracing)"
                .into(),
        },
    }
}

/// An error with its sources, on one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The kernel features the object needs beyond program types, each probed with aya's
/// feature probes (a minimal map or program loaded and dropped): ring buffer, LRU hash,
/// per-CPU array and stack-trace maps; the `bpf_loop`, ring-buffer, stack and function-IP
/// helpers. Helpers are probed from a tracepoint program (probes of fentry programs need an
/// attach target; kprobe programs load on kernels without kprobes enabled too).
pub fn feature_probes() -> Vec<Capability> {
    use aya::{
        maps::MapType,
        programs::ProgramType,
        sys::{is_helper_supported, is_map_supported, BpfHelper},
    };
    let map = |name: &'static str, map_type: MapType, since: &str| {
        probed(
            name,
            is_map_supported(map_type),
            format!("map type supported (Linux {since})"),
            format!("map type not supported (needs Linux {since})"),
        )
    };
    let helper =
        |name: &'static str, program: ProgramType, helper: BpfHelper, since: &str, used: &str| {
            probed(
                name,
                is_helper_supported(program, helper),
                format!("helper supported (Linux {since}): {used}"),
                format!("helper missing (needs Linux {since}): {used}"),
            )
        };
    vec![
        map("ringbuf", MapType::RingBuf, "5.8"),
        map("lru_hash", MapType::LruHash, "4.10"),
        map("percpu_array", MapType::PerCpuArray, "4.6"),
        map("stack_trace", MapType::StackTrace, "4.6"),
        helper(
            "bpf_loop",
            ProgramType::TracePoint,
            BpfHelper::BPF_FUNC_loop,
            "5.17",
            "the held-lock scans",
        ),
        helper(
            "ringbuf_reserve",
            ProgramType::TracePoint,
            BpfHelper::BPF_FUNC_ringbuf_reserve,
            "5.8",
            "every record",
        ),
        helper(
            "get_stack",
            ProgramType::TracePoint,
            BpfHelper::BPF_FUNC_get_stack,
            "4.18",
            "--module",
        ),
        helper(
            "get_func_ip",
            ProgramType::KProbe,
            BpfHelper::BPF_FUNC_get_func_ip,
            "5.15",
            "kprobe fallback: which function fired",
        ),
    ]
}

/// A feature probe's answer as a capability: `present` or `missing` as its detail, or why the
/// probe itself failed.
fn probed(
    name: &'static str,
    answer: Result<bool, impl std::fmt::Display>,
    present: String,
    missing: String,
) -> Capability {
    let (available, detail) = match answer {
        Ok(true) => (true, present),
        Ok(false) => (false, missing),
        Err(err) => (false, format!("probe failed: {err}")),
    };
    Capability {
        name,
        available,
        detail,
    }
}
