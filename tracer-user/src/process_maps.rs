//! What the daemon knows of traced processes' address spaces: each process's
//! `/proc/PID/maps`, read at its first sight (its first record) and kept, and every file
//! mapped executable, opened once while a process maps it (through `/proc/PID/map_files`,
//! so it is the very file mapped, in any mount namespace). Frames and static locks are
//! symbolized through them — file and file offset — even once the process has exited: a
//! short-lived process is often gone before its records are symbolized, and with it its
//! `/proc/PID/maps`.
//!
//! A snapshot is read again while the process runs when a lookup needs a mapping it lacks
//! (a library loaded since), at an `execve` (the tree-tracing programs report those), and
//! when the pid turns out to be another process's (a new start time).
use std::{
    collections::HashMap,
    fs::{self, File},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, LazyLock, Mutex},
    time::{Duration, Instant},
};

/// A mapped file as /proc/PID/maps names it: device, inode and path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ElfIdentity {
    pub dev: String,
    pub inode: u64,
    pub path: String,
}

/// One line of /proc/PID/maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    /// Mapped executable (`r-xp`): code, which a return address must point into.
    pub executable: bool,
    /// `None` for anonymous and special (`[heap]`, deleted) mappings.
    pub file: Option<ElfIdentity>,
}

/// `start-end perms offset dev inode path` lines.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(6, ' ');
            let (start, end) = fields.next()?.split_once('-')?;
            let perms = fields.next()?;
            let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
            let dev = fields.next()?.to_string();
            let inode: u64 = fields.next()?.parse().ok()?;
            let path = fields.next().unwrap_or("").trim_start();
            let file =
                (inode != 0 && path.starts_with('/') && !path.ends_with(" (deleted)")).then(|| {
                    ElfIdentity {
                        dev,
                        inode,
                        path: path.to_string(),
                    }
                });
            Some(Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                offset,
                executable: perms.as_bytes().get(2) == Some(&b'x'),
                file,
            })
        })
        .collect()
}

/// The file mapping `addr` (an anonymous mapping right after a file mapping is that file's
/// `.bss`), and the file's first mapping.
pub fn file_of(mappings: &[Mapping], addr: u64) -> Option<(&ElfIdentity, &Mapping)> {
    let index = mappings
        .iter()
        .position(|m| m.start <= addr && addr < m.end)?;
    let file = match &mappings[index].file {
        Some(file) => file,
        None => {
            let previous = mappings.get(index.checked_sub(1)?)?;
            if previous.end != mappings[index].start {
                return None;
            }
            previous.file.as_ref()?
        }
    };
    let first = mappings
        .iter()
        .filter(|m| m.file.as_ref() == Some(file))
        .min_by_key(|m| m.start)?;
    Some((file, first))
}

/// A process's mappings as read once.
#[derive(Debug)]
pub struct Snapshot {
    /// In address order, as the kernel lists them.
    pub mappings: Vec<Mapping>,
    /// The process's start time (`/proc/PID/stat`), which tells it from a later process
    /// with the same pid.
    start_time: Option<u64>,
}

impl Snapshot {
    pub fn mapping(&self, addr: u64) -> Option<&Mapping> {
        let after = self.mappings.partition_point(|m| m.start <= addr);
        self.mappings[..after].last().filter(|m| addr < m.end)
    }

    pub fn is_executable(&self, addr: u64) -> bool {
        self.mapping(addr).is_some_and(|m| m.executable)
    }

    /// The file mapped at `addr` and `addr`'s offset in it.
    pub fn file_offset(&self, addr: u64) -> Option<(&ElfIdentity, u64)> {
        let mapping = self.mapping(addr)?;
        Some((
            mapping.file.as_ref()?,
            addr - mapping.start + mapping.offset,
        ))
    }
}

/// A file some process mapped, to read its symbols from.
#[derive(Debug)]
pub struct MappedFile {
    /// Kept open so that `path` (`/proc/self/fd/N`) keeps naming the very file mapped.
    _file: Option<File>,
    /// None: not opened (not the mapped file any more, not a regular file, too large, or
    /// too many open): its frames and variables stay unnamed.
    path: Option<PathBuf>,
}

impl MappedFile {
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

struct Known {
    snapshot: Arc<Snapshot>,
    /// When the pid was last checked to still be this process.
    checked: Instant,
    /// Since when it is known to have exited.
    gone_since: Option<Instant>,
}

#[derive(Default)]
struct Cache {
    processes: HashMap<u32, Known>,
    files: HashMap<ElfIdentity, Arc<MappedFile>>,
    open_files: usize,
}

static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(Mutex::default);

/// Files kept open at most (beyond, files are read by path, which may fail once their
/// process has exited if it lived in another mount namespace).
const MAX_OPEN_FILES: usize = 4096;
/// The largest traced binary whose symbols are read (ELF symbol tables and DWARF): parsing
/// time and memory grow with the file, which any traced user may have written.
const MAX_SYMBOL_FILE_BYTES: u64 = 1 << 30;
/// How often a known pid is checked to still be the same process.
const RECHECK: Duration = Duration::from_secs(1);
/// How long what is known of an exited process is kept for its last records.
const KEEP_GONE: Duration = Duration::from_secs(60);

fn cache() -> std::sync::MutexGuard<'static, Cache> {
    CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `/proc/PID/stat`'s start time (field 22), `None` once the process is gone.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields follow its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl Cache {
    /// Reads `pid`'s maps now (`None` if the process is gone) and opens the files it maps
    /// executable that are not open yet.
    fn read(&mut self, pid: u32) -> Option<Arc<Snapshot>> {
        let start_time = start_time(pid);
        let text = fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
        let mappings = parse_maps(&text);
        if mappings.is_empty() {
            // A zombie's maps are empty: it is gone.
            return None;
        }
        for mapping in &mappings {
            let Some(file) = mapping.file.as_ref().filter(|_| mapping.executable) else {
                continue;
            };
            if !self.files.contains_key(file) {
                let opened = self.open(pid, file, Some(mapping));
                self.files.insert(file.clone(), Arc::new(opened));
            }
        }
        let snapshot = Arc::new(Snapshot {
            mappings,
            start_time,
        });
        self.processes.insert(
            pid,
            Known {
                snapshot: snapshot.clone(),
                checked: Instant::now(),
                gone_since: None,
            },
        );
        Some(snapshot)
    }

    /// A mapped file, opened while `pid` maps it: its mapping's own file, else its path in
    /// the process's mount namespace, else in ours (the inode must match).
    fn open(&mut self, pid: u32, file: &ElfIdentity, mapping: Option<&Mapping>) -> MappedFile {
        if self.open_files < MAX_OPEN_FILES {
            let mut candidates = Vec::new();
            if let Some(m) = mapping {
                candidates.push(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end));
            }
            candidates.push(format!("/proc/{pid}/root{}", file.path));
            candidates.push(file.path.clone());
            for candidate in candidates {
                use std::os::unix::fs::OpenOptionsExt as _;
                // Non-blocking: a FIFO planted at the mapped file's path must not hang us.
                let Ok(opened) = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&candidate)
                else {
                    continue;
                };
                let Ok(meta) = opened.metadata() else {
                    continue;
                };
                if !meta.is_file() || meta.ino() != file.inode {
                    continue;
                }
                if meta.len() > MAX_SYMBOL_FILE_BYTES {
                    log::warn!(
                        "{}: {} MiB, over the {} MiB read for symbols: its frames and \
                         variables stay unnamed",
                        file.path,
                        meta.len() >> 20,
                        MAX_SYMBOL_FILE_BYTES >> 20
                    );
                    break;
                }
                self.open_files += 1;
                return MappedFile {
                    path: Some(PathBuf::from(format!("/proc/self/fd/{}", raw_fd(&opened)))),
                    _file: Some(opened),
                };
            }
        }
        MappedFile {
            _file: None,
            path: None,
        }
    }

    /// `pid`'s snapshot: the known one, unless the pid is another process's by now.
    fn snapshot(&mut self, pid: u32) -> Option<Arc<Snapshot>> {
        let Some(known) = self.processes.get_mut(&pid) else {
            return self.read(pid);
        };
        if known.checked.elapsed() < RECHECK {
            return Some(known.snapshot.clone());
        }
        known.checked = Instant::now();
        match start_time(pid) {
            // Gone: what was known still names the records it left.
            None => {
                known.gone_since.get_or_insert_with(Instant::now);
                Some(known.snapshot.clone())
            }
            Some(time) if Some(time) == known.snapshot.start_time => Some(known.snapshot.clone()),
            Some(_) => {
                let old = known.snapshot.clone();
                self.read(pid).or(Some(old))
            }
        }
    }
}

fn raw_fd(file: &File) -> i32 {
    use std::os::fd::AsRawFd as _;
    file.as_raw_fd()
}

/// The first record of `pid` (a thread group): its maps are read now unless known, before
/// anything slow (symbolizing) gives it time to exit.
pub fn first_sight(pid: u32) {
    if pid != 0 {
        let _ = cache().snapshot(pid);
    }
}

/// `pid` called `execve`: what was known of its address space no longer holds.
pub fn forget(pid: u32) {
    cache().processes.remove(&pid);
}

/// `pid`'s snapshot for looking up `addrs` (a stack, or one address), read again while the
/// process runs if it lacks a mapping they need: a lone address in no mapping, or an
/// address in none followed by one in a mapping (not the garbage that ends a stack).
pub fn covering(pid: u32, addrs: &[u64]) -> Option<Arc<Snapshot>> {
    if pid == 0 {
        return None;
    }
    let mut cache = cache();
    let snapshot = cache.snapshot(pid)?;
    let hit = |addr: &u64| snapshot.mapping(*addr).is_some();
    let stale = match addrs {
        [one] => !hit(one),
        _ => addrs
            .iter()
            .position(|addr| !hit(addr))
            .is_some_and(|miss| addrs[miss..].iter().any(hit)),
    };
    if stale && start_time(pid).is_some_and(|time| Some(time) == snapshot.start_time) {
        return cache.read(pid).or(Some(snapshot));
    }
    Some(snapshot)
}

/// The file to read `file`'s symbols from (`pid` maps it, or did).
pub fn mapped_file(pid: u32, file: &ElfIdentity) -> Arc<MappedFile> {
    let mut cache = cache();
    if let Some(known) = cache.files.get(file) {
        return known.clone();
    }
    let opened = Arc::new(cache.open(pid, file, None));
    cache.files.insert(file.clone(), opened.clone());
    opened
}

/// A user stack of `pid` up to its first frame outside the process's executable mappings:
/// a frame-pointer walk that leaves the real frames (a function without a frame pointer at
/// the bottom of the stack) reads on into garbage. Left whole when the process was never
/// seen alive, or when its snapshot does not even know the first frame's code.
pub fn executable_prefix(pid: u32, mut addrs: Vec<u64>) -> Vec<u64> {
    let Some(snapshot) = covering(pid, &addrs) else {
        return addrs;
    };
    if !addrs
        .first()
        .is_some_and(|&addr| snapshot.is_executable(addr))
    {
        return addrs;
    }
    let end = addrs
        .iter()
        .position(|&addr| !snapshot.is_executable(addr))
        .unwrap_or(addrs.len());
    addrs.truncate(end);
    addrs
}

/// Forgets processes that exited a while ago (their records are long read); called now and
/// then. Files stay open: blazesym keeps what it parsed of them by path.
pub fn sweep() {
    let mut cache = cache();
    let now = Instant::now();
    cache.processes.retain(|&pid, known| {
        if known.gone_since.is_none() && start_time(pid) != known.snapshot.start_time {
            known.gone_since = Some(now);
        }
        known
            .gone_since
            .is_none_or(|since| now.duration_since(since) < KEEP_GONE)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(text: &str) -> Snapshot {
        Snapshot {
            mappings: parse_maps(text),
            start_time: None,
        }
    }

    const MAPS: &str = "55d0a1200000-55d0a1201000 r--p 00000000 08:01 1234    /usr/bin/prog\n\
                        55d0a1201000-55d0a1202000 r-xp 00001000 08:01 1234    /usr/bin/prog\n\
                        55d0a1203000-55d0a1204000 rw-p 00002000 08:01 1234    /usr/bin/prog\n\
                        7f0000000000-7f0000100000 r-xp 00028000 08:01 77      /usr/lib/libc.so.6\n\
                        7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0       [stack]\n";

    #[test]
    fn a_snapshot_tells_code_and_file_offsets() {
        let snapshot = snapshot(MAPS);
        assert!(snapshot.is_executable(0x55d0_a120_1010));
        assert!(!snapshot.is_executable(0x55d0_a120_0010));
        assert!(!snapshot.is_executable(0x55d0_a120_2010), "a hole");
        assert!(!snapshot.is_executable(0x7ffd_0000_0100), "the stack");
        let (file, offset) = snapshot.file_offset(0x7f00_0000_1234).unwrap();
        assert_eq!(
            (file.path.as_str(), offset),
            ("/usr/lib/libc.so.6", 0x29234)
        );
        assert!(snapshot.file_offset(0x7ffd_0000_0100).is_none());
        assert!(snapshot.mapping(0x1000).is_none());
        assert!(snapshot.mapping(0xffff_0000_0000).is_none());
    }

    #[test]
    fn this_process_is_seen_and_its_stack_cut_at_the_garbage() {
        let pid = std::process::id();
        let code = this_process_is_seen_and_its_stack_cut_at_the_garbage as *const () as u64;
        let data = &raw const CACHE as u64;
        first_sight(pid);
        let snapshot = covering(pid, &[code]).unwrap();
        assert!(snapshot.is_executable(code));
        assert!(!snapshot.is_executable(data));
        // A stack ending in a value that is no code address.
        let stack = vec![code, code + 1, 0x1_0000_5671, code];
        assert_eq!(executable_prefix(pid, stack), [code, code + 1]);
        // Not even the first frame known: left alone.
        assert_eq!(executable_prefix(pid, vec![0x10, code]), [0x10, code]);
        let (file, _) = snapshot.file_offset(code).unwrap();
        let mapped = mapped_file(pid, file);
        let meta = fs::metadata(mapped.path().unwrap()).unwrap();
        assert_eq!(meta.ino(), file.inode);
    }

    #[test]
    fn a_fifo_or_an_oversized_file_at_a_mapped_path_is_not_read() {
        let dir = std::env::temp_dir().join(format!("locktrace-mapped-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("planted");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let huge = dir.join("huge");
        // Sparse: no disk used.
        File::create(&huge)
            .unwrap()
            .set_len(MAX_SYMBOL_FILE_BYTES + 1)
            .unwrap();
        for path in [fifo, huge] {
            let file = ElfIdentity {
                dev: "00:00".into(),
                inode: fs::metadata(&path).unwrap().ino(),
                path: path.to_str().unwrap().to_string(),
            };
            let (sender, receiver) = std::sync::mpsc::channel();
            let pid = std::process::id();
            std::thread::spawn(move || {
                let _ = sender.send(mapped_file(pid, &file).path().map(Path::to_path_buf));
            });
            // Opening a FIFO for reading would wait for a writer forever.
            let opened = receiver
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("opening {} hung", path.display()));
            assert_eq!(opened, None, "{} was opened for symbols", path.display());
        }
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn start_time_is_read_past_a_command_name_with_parentheses() {
        assert!(start_time(std::process::id()).is_some());
        assert!(start_time(u32::MAX).is_none());
    }
}
