//! Loading the embedded eBPF object with the load-time globals the user asked for.
use anyhow::{Context as _, Result};
use aya::{Ebpf, EbpfLoader};

/// The eBPF object built by `build.rs`, embedded so that the binary is self-contained.
static TRACER_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"));

/// Load-time switches and filters (globals in the object, not config maps).
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Only trace this thread group (0: all).
    pub pid: u32,
    /// Stream every lock operation too.
    pub emit_lock_ops: bool,
    /// Ring-buffer size in bytes (a power of two, multiple of the page size).
    pub ringbuf_bytes: Option<u32>,
}

pub fn load(options: &LoadOptions) -> Result<Ebpf> {
    raise_memlock_limit();
    let emit_lock_ops = u32::from(options.emit_lock_ops);
    let mut loader = EbpfLoader::new();
    loader
        .override_global("FILTER_PID", &options.pid, true)
        .override_global("EMIT_LOCK_OPS", &emit_lock_ops, true);
    if let Some(bytes) = options.ringbuf_bytes {
        loader.map_max_entries("EVENTS", bytes);
    }
    let mut ebpf = loader.load(TRACER_OBJECT).context("loading the eBPF object")?;
    match aya_log::EbpfLogger::init(&mut ebpf) {
        Ok(logger) => forward_ebpf_logs(logger),
        // The object logs nothing on hot paths unless built to; no log map is fine.
        Err(err) => log::debug!("eBPF logging not initialised: {err}"),
    }
    Ok(ebpf)
}

fn forward_ebpf_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the logger owns its ring-buffer map fd for as long as the AsyncFd owns it.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    };
    let Ok(mut logger) = registered else {
        return;
    };
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = logger.readable_mut().await else { return };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
fn raise_memlock_limit() {
    let limit = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        log::debug!("could not raise RLIMIT_MEMLOCK: {}", std::io::Error::last_os_error());
    }
}
