//! Loading the embedded eBPF object with the load-time globals the user asked for.
use anyhow::{Context as _, Result};
use aya::{
    maps::{Map, MapData},
    Ebpf, EbpfLoader,
};

/// The eBPF object built by `build.rs`, embedded so that the binary is self-contained.
pub(crate) static TRACER_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"));

/// Load-time switches and filters (globals in the object, not config maps).
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Only trace this thread group (0: all).
    pub pid: u32,
    /// Only trace this thread (0: all).
    pub tid: u32,
    /// `trace -- COMMAND`: only trace the command's process tree (the `TRACED_TASKS` map,
    /// filled by the task-tree programs; needs their record offsets among the globals).
    pub tree: bool,
    /// Stream every lock operation too.
    pub emit_lock_ops: bool,
    /// Ring-buffer size in bytes (a power of two, multiple of the page size).
    pub ringbuf_bytes: Option<u32>,
    /// (map name, entries) for the bounded maps the user resized.
    pub map_capacities: Vec<(&'static str, u32)>,
    /// `--comm`: only trace tasks whose command name is exactly this (at most 15 bytes, as
    /// the kernel truncates `comm`; longer names are truncated the same way).
    pub comm: Option<String>,
    /// `--module NAME`: keep only kernel dependencies with a side acquired from this
    /// module's text (within a few stack frames). The module must be loaded.
    pub module: Option<String>,
    /// The traced pthread library is glibc, whose `pthread_mutex_t` layout the uprobes read
    /// to see a recursive mutex taken again by its owner.
    pub glibc_mutexes: bool,
    /// `--class-by-init-site`: kernel classes keyed and named by their init call site even
    /// where the init function passes a name and key.
    pub class_by_init_site: bool,
}

/// Values of the kernel programs' load-time globals, found on the running kernel (by
/// `attach::kernel_globals`).
#[derive(Debug, Clone, Default)]
pub struct KernelGlobals {
    /// (global name, value) pairs for `EbpfLoader::override_global`.
    pub u32s: Vec<(&'static str, u32)>,
    pub u64s: Vec<(&'static str, u64)>,
    /// `--module`'s text range, `[start, end)`; `(0, 0)` without `--module`.
    pub module_text: (u64, u64),
    /// What could not be determined, for the attach report.
    pub notes: Vec<String>,
}

/// Loads the object with the user's filters and the running kernel's facts as globals.
pub fn load(options: &LoadOptions, kernel: &KernelGlobals) -> Result<Ebpf> {
    raise_memlock_limit();
    let emit_lock_ops = u32::from(options.emit_lock_ops);
    let mut comm = [0u8; tracer_common::COMM_LEN];
    if let Some(name) = &options.comm {
        let bytes = name.as_bytes();
        let len = bytes.len().min(tracer_common::COMM_LEN - 1);
        comm[..len].copy_from_slice(&bytes[..len]);
    }
    let (module_start, module_end) = kernel.module_text;
    for note in &kernel.notes {
        log::debug!("kernel probes: {note}");
    }
    let self_tgid = std::process::id();
    let glibc_mutexes = u32::from(options.glibc_mutexes);
    let class_by_init_site = u32::from(options.class_by_init_site);
    let tree = u32::from(options.tree);
    let mut loader = EbpfLoader::new();
    loader
        .override_global("FILTER_PID", &options.pid, true)
        .override_global("FILTER_TID", &options.tid, true)
        .override_global("FILTER_TREE", &tree, true)
        .override_global("EMIT_LOCK_OPS", &emit_lock_ops, true)
        .override_global("FILTER_COMM", &comm, true)
        .override_global("FILTER_SELF_TGID", &self_tgid, true)
        .override_global("FILTER_MODULE_START", &module_start, true)
        .override_global("FILTER_MODULE_END", &module_end, true)
        .override_global("GLIBC_MUTEX_LAYOUT", &glibc_mutexes, true)
        .override_global("CLASS_BY_INIT_SITE", &class_by_init_site, true);
    for (name, value) in &kernel.u32s {
        loader.override_global(name, value, true);
    }
    for (name, value) in &kernel.u64s {
        loader.override_global(name, value, true);
    }
    if let Some(bytes) = options.ringbuf_bytes {
        loader.map_max_entries("EVENTS", bytes);
    }
    for &(map, entries) in &options.map_capacities {
        loader.map_max_entries(map, entries);
    }
    // No aya-log: nothing on the probes' paths logs (a log record per event would cost
    // what the ring buffer's records are budgeted for); counters say what happened.
    loader
        .load(TRACER_OBJECT)
        .context("loading the eBPF object")
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The kernel id of one of a loaded object's maps.
pub fn map_id(ebpf: &Ebpf, name: &str) -> Result<u32> {
    let map = ebpf
        .map(name)
        .with_context(|| format!("the {name} map is missing"))?;
    let data = match map {
        Map::HashMap(data)
        | Map::LruHashMap(data)
        | Map::PerCpuArray(data)
        | Map::StackTraceMap(data) => data,
        _ => anyhow::bail!("the {name} map has an unexpected type"),
    };
    Ok(data.info().context("map info")?.id())
}

/// A handle of our own on a loaded map, by id: it outlives the object that loaded it (the
/// final figures are read after detach) and can be opened from another process (`held`).
pub fn open_map(id: u32) -> Result<Map> {
    let data = MapData::from_id(id).with_context(|| format!("opening map {id}"))?;
    Map::from_map_data(data).with_context(|| format!("opening map {id}"))
}

/// Runs of a loaded program the kernel skipped because it was already running on that CPU
/// (`bpf_prog_info.recursion_misses`, Linux 5.12+; 0 where unknown).
pub fn recursion_misses(program: &std::os::fd::OwnedFd) -> u64 {
    use std::os::fd::AsRawFd as _;
    // SAFETY: plain integer structs (and a union of them): zeroed is valid; the union's
    // `info` arm is what BPF_OBJ_GET_INFO_BY_FD reads.
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut attr: aya_obj::generated::bpf_attr = unsafe { std::mem::zeroed() };
    attr.info.bpf_fd = program.as_raw_fd() as u32;
    attr.info.info_len = std::mem::size_of_val(&info) as u32;
    attr.info.info = std::ptr::addr_of_mut!(info) as u64;
    // SAFETY: `attr` and the `info` buffer it points to outlive the call; the kernel writes
    // at most `info_len` bytes.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            aya_obj::generated::bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            std::ptr::addr_of_mut!(attr),
            std::mem::size_of_val(&attr),
        )
    };
    if result == 0 {
        info.recursion_misses
    } else {
        0
    }
}

/// Switches the programs on (once every probe is attached) or off (before the last records
/// are read and the probes detach): the attach and detach windows, in which some probes of a
/// lock run and others not yet or no longer, make no half-seen lock operations.
pub fn set_armed(ebpf: &mut Ebpf, armed: bool) -> Result<()> {
    let map = ebpf.map_mut("ARMED").context("the ARMED map is missing")?;
    let mut flag = aya::maps::Array::<_, u32>::try_from(map).context("ARMED")?;
    flag.set(0, u32::from(armed), 0).context("setting ARMED")
}
