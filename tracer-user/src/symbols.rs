//! Symbolization of kernel and user addresses with blazesym, into lockgraph frames.
//! blazesym reads kallsyms; it does not name the module of a kallsyms symbol, so module
//! names (`[nouveau]`) come from the module address ranges in /proc/modules.
//!
//! blazesym keeps a parsed /proc/kallsyms for as long as the file's metadata is unchanged,
//! and procfs never changes it: a module loaded after the first kernel lookup would resolve
//! to whichever older symbol precedes it in the module area — often one of our own BPF
//! programs, whose frames are then dropped as tracing machinery. So the kernel symbolizer
//! is rebuilt whenever the set of loaded modules changes.
//!
//! User addresses are symbolized through the process's maps as `process_maps` read them at
//! its first sight: file and file offset, from the file itself, so that a process that has
//! exited since still has its frames and static locks named.
use std::{
    collections::HashMap, fs, num::NonZeroU32, ops::ControlFlow, os::unix::fs::FileExt as _,
    path::Path, rc::Rc,
};

use blazesym::{
    inspect::{self, Inspector},
    symbolize::{
        source::{Elf, Kernel, Process, Source},
        Input, Sym, Symbolized, Symbolizer,
    },
    MaybeDefault, Pid, SymType,
};
use lockgraph::Frame;

#[cfg(test)]
use crate::process_maps::parse_maps;
use crate::process_maps::{self, file_of, ElfIdentity, Mapping};

/// A loaded module's text range, for `[module]` annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModuleRange {
    name: String,
    start: u64,
    end: u64,
}

pub struct Symbols {
    /// Kernel addresses; its kallsyms is as of `modules` (see the module docs).
    kernel: Symbolizer,
    /// User addresses: its caches (ELF files, process maps) do not depend on modules.
    user: Symbolizer,
    modules: Vec<ModuleRange>,
    inspector: Inspector,
    /// Variables of the ELF files seen so far, by the file's identity in /proc/PID/maps
    /// (`None`: not a readable ELF file).
    elf_data: HashMap<ElfIdentity, Option<Rc<ElfData>>>,
}

/// Where a static lock lies: the variable, the offset into it and the variable's size
/// (`None` when the symbol table does not say, as kallsyms does not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataLocation {
    pub symbol: String,
    pub offset: u64,
    pub size: Option<u64>,
}

/// A `PT_LOAD` program header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LoadSegment {
    offset: u64,
    vaddr: u64,
    memsz: u64,
}

/// A data symbol (`STT_OBJECT`) of an ELF file, at its ELF virtual address.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DataSymbol {
    addr: u64,
    size: u64,
    name: String,
}

/// What naming a static lock needs from an ELF file: its loadable segments (for the load
/// bias) and its variables sorted by address.
#[derive(Debug, Default)]
struct ElfData {
    loads: Vec<LoadSegment>,
    symbols: Vec<DataSymbol>,
}

impl ElfData {
    /// The variable containing the ELF virtual address `vaddr`, with the offset into it.
    fn symbol_at(&self, vaddr: u64) -> Option<DataLocation> {
        let after = self.symbols.partition_point(|symbol| symbol.addr <= vaddr);
        let symbol = self.symbols[..after].last()?;
        (vaddr < symbol.addr + symbol.size).then(|| DataLocation {
            symbol: symbol.name.clone(),
            offset: vaddr - symbol.addr,
            size: Some(symbol.size),
        })
    }
}

impl Symbols {
    pub fn new() -> Self {
        Self {
            kernel: Symbolizer::new(),
            user: Symbolizer::new(),
            modules: read_modules(),
            inspector: Inspector::new(),
            elf_data: HashMap::new(),
        }
    }

    /// Reads kallsyms now rather than at the first stack: a daemon that has just attached
    /// is ready to name frames at once (its own BPF programs included).
    pub fn load_kernel_symbols(&mut self) {
        let source = Self::kernel_source();
        // Any address will do; the answer does not matter.
        let _ = self
            .kernel
            .symbolize(&source, Input::AbsAddr(&[KERNEL_MODULE_AREA]));
    }

    /// Re-reads /proc/modules; when modules came or went, kallsyms is read again at the next
    /// lookup.
    fn refresh_modules(&mut self) {
        self.sync_modules(read_modules());
    }

    /// Takes `modules` as the loaded modules; `true` if that changed the set.
    fn sync_modules(&mut self, modules: Vec<ModuleRange>) -> bool {
        if modules == self.modules {
            return false;
        }
        self.modules = modules;
        self.kernel = Symbolizer::new();
        true
    }

    fn kernel_source() -> Source<'static> {
        Source::Kernel(Kernel {
            // kallsyms is always there; searching the disk for a vmlinux is slow and rarely
            // finds one on production machines.
            vmlinux: MaybeDefault::None,
            ..Kernel::default()
        })
    }

    /// The module `addr` lies in, as of the last /proc/modules read (`kernel_frames` reads
    /// it again first whenever a stack reaches the module area).
    fn module_of(&self, addr: u64) -> Option<String> {
        self.modules
            .iter()
            .find(|m| m.start <= addr && addr < m.end)
            .map(|m| m.name.clone())
    }

    pub fn kernel_frames(&mut self, addrs: &[u64]) -> Vec<Frame> {
        // Before symbolizing: a stack through a module loaded since kallsyms was read needs
        // it read again. Reading /proc/modules costs microseconds; stacks are symbolized
        // once per new dependency.
        if addrs.iter().any(|&addr| addr >= KERNEL_MODULE_AREA) {
            self.refresh_modules();
        }
        let source = Self::kernel_source();
        let symbolized = self.kernel.symbolize(&source, Input::AbsAddr(addrs)).ok();
        let mut frames = Vec::with_capacity(addrs.len());
        for (index, &addr) in addrs.iter().enumerate() {
            let frame = match symbolized.as_ref().and_then(|all| all.get(index)) {
                Some(Symbolized::Sym(sym)) => Frame {
                    addr,
                    symbol: Some(sym.name.to_string()),
                    offset: sym.offset as u64,
                    size: sym.size.map(|size| size as u64),
                    module: None,
                },
                _ => Frame::addr(addr),
            };
            frames.push(frame);
        }
        drop(symbolized);
        for frame in &mut frames {
            frame.module = self.module_of(frame.addr);
        }
        frames
    }

    /// Frames of process `pid`: through the files its maps snapshot names (file offsets),
    /// whether or not it still runs; code in no file (the vDSO, JIT code) only while it runs.
    pub fn user_frames(&mut self, pid: u32, addrs: &[u64]) -> Vec<Frame> {
        let mut frames: Vec<Frame> = addrs.iter().map(|&addr| Frame::addr(addr)).collect();
        let Some(snapshot) = process_maps::covering(pid, addrs) else {
            return frames;
        };
        let mut by_file: HashMap<&ElfIdentity, Vec<(usize, u64)>> = HashMap::new();
        let mut fileless = Vec::new();
        for (index, &addr) in addrs.iter().enumerate() {
            match snapshot.file_offset(addr) {
                Some((file, offset)) => by_file.entry(file).or_default().push((index, offset)),
                None if snapshot.is_executable(addr) => fileless.push(index),
                None => {}
            }
        }
        for (file, entries) in by_file {
            let mapped = process_maps::mapped_file(pid, file);
            let Some(path) = mapped.path() else {
                continue;
            };
            let offsets: Vec<u64> = entries.iter().map(|&(_, offset)| offset).collect();
            let source = Source::Elf(Elf::new(path));
            let Ok(symbolized) = self.user.symbolize(&source, Input::FileOffset(&offsets)) else {
                continue;
            };
            let module = Path::new(&file.path)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned());
            for (&(index, _), symbolized) in entries.iter().zip(&symbolized) {
                if let Symbolized::Sym(sym) = symbolized {
                    frames[index] = user_frame(addrs[index], sym, module.clone());
                }
            }
        }
        let Some(pid) = NonZeroU32::new(pid).filter(|_| !fileless.is_empty()) else {
            return frames;
        };
        let fileless_addrs: Vec<u64> = fileless.iter().map(|&index| addrs[index]).collect();
        let source = Source::Process(Process::new(Pid::Pid(pid)));
        if let Ok(symbolized) = self
            .user
            .symbolize(&source, Input::AbsAddr(&fileless_addrs))
        {
            for (&index, symbolized) in fileless.iter().zip(&symbolized) {
                if let Symbolized::Sym(sym) = symbolized {
                    let module = sym
                        .module
                        .as_ref()
                        .and_then(|path| Path::new(path).file_name())
                        .map(|name| name.to_string_lossy().into_owned());
                    frames[index] = user_frame(addrs[index], sym, module);
                }
            }
        }
        frames
    }

    /// The symbol an address lies in, with its offset: names static locks (`cgroup_mutex`).
    pub fn kernel_data_symbol(&mut self, addr: u64) -> Option<DataLocation> {
        let frame = self.kernel_frames(&[addr]).pop()?;
        let symbol = frame.symbol?;
        // A heap address far from any symbol is not a static lock.
        (frame.offset < 4096).then_some(DataLocation {
            symbol,
            offset: frame.offset,
            size: None,
        })
    }

    /// The variable of process `pid` that `addr` lies in, with the offset into it: names
    /// static user locks (`lock_a`). blazesym's symbolizer resolves functions only, so the
    /// ELF file mapping the address comes from /proc/PID/maps, the address is turned into an
    /// ELF virtual address with the file's load bias, and looked up among the file's
    /// `STT_OBJECT` symbols (`.symtab` and `.dynsym`). Names are as in the symbol table (not
    /// demangled). `None` for heap, stack and anonymous memory.
    ///
    /// The maps are the snapshot `process_maps` took at the process's first sight (read
    /// again while it runs if the address lies in no mapping of it), the file the one it
    /// opened then: a process that has exited still has its static locks named.
    pub fn user_data_symbol(&mut self, pid: u32, addr: u64) -> Option<DataLocation> {
        let snapshot = process_maps::covering(pid, &[addr])?;
        let (file, first) = file_of(&snapshot.mappings, addr)?;
        let data = self.elf_data(pid, file)?;
        data.symbol_at(elf_vaddr(first, &data.loads, addr)?)
    }

    fn elf_data(&mut self, pid: u32, file: &ElfIdentity) -> Option<Rc<ElfData>> {
        if let Some(data) = self.elf_data.get(file) {
            return data.clone();
        }
        let mapped = process_maps::mapped_file(pid, file);
        let data = mapped
            .path()
            .and_then(Path::to_str)
            .and_then(|path| read_elf_data(&self.inspector, path))
            .map(Rc::new);
        self.elf_data.insert(file.clone(), data.clone());
        data
    }
}

/// A user frame from blazesym's symbol, `module` the file it lies in.
fn user_frame(addr: u64, sym: &Sym<'_>, module: Option<String>) -> Frame {
    Frame {
        addr,
        symbol: Some(sym.name.to_string()),
        offset: sym.offset as u64,
        size: sym.size.map(|size| size as u64),
        module,
    }
}

/// `addr`'s ELF virtual address. ld.so and the kernel map every segment with one bias, which
/// the first segment's mapping (the file's lowest) fixes; `None` outside every segment.
fn elf_vaddr(first: &Mapping, loads: &[LoadSegment], addr: u64) -> Option<u64> {
    let first_load = loads.first()?;
    if first.offset != first_load.offset & !0xfff {
        return None;
    }
    let vaddr = addr.wrapping_sub(first.start.wrapping_sub(first_load.vaddr & !0xfff));
    loads
        .iter()
        .any(|load| load.vaddr <= vaddr && vaddr - load.vaddr < load.memsz)
        .then_some(vaddr)
}

/// The `PT_LOAD` segments of a 64-bit little-endian ELF file, in file order.
fn read_load_segments(file: &fs::File) -> Option<Vec<LoadSegment>> {
    const PT_LOAD: u32 = 1;
    let mut header = [0u8; 64];
    file.read_exact_at(&mut header, 0).ok()?;
    // Magic, ELFCLASS64, ELFDATA2LSB.
    if header[..4] != *b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return None;
    }
    let u16_at =
        |bytes: &[u8], at: usize| u16::from_le_bytes(bytes[at..at + 2].try_into().unwrap());
    let u32_at =
        |bytes: &[u8], at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let u64_at =
        |bytes: &[u8], at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let phoff = u64_at(&header, 0x20);
    let entsize = usize::from(u16_at(&header, 0x36));
    let count = usize::from(u16_at(&header, 0x38));
    if entsize < 56 {
        return None;
    }
    let mut table = vec![0u8; entsize * count];
    file.read_exact_at(&mut table, phoff).ok()?;
    let loads: Vec<LoadSegment> = table
        .chunks_exact(entsize)
        .filter(|entry| u32_at(entry, 0) == PT_LOAD)
        .map(|entry| LoadSegment {
            offset: u64_at(entry, 8),
            vaddr: u64_at(entry, 16),
            memsz: u64_at(entry, 40),
        })
        .collect();
    (!loads.is_empty()).then_some(loads)
}

fn read_elf_data(inspector: &Inspector, path: &str) -> Option<ElfData> {
    let loads = read_load_segments(&fs::File::open(path).ok()?)?;
    let mut elf = inspect::source::Elf::new(path);
    // Debug symbols only would mean functions only: read the ELF symbol tables.
    elf.debug_syms = false;
    let mut symbols = Vec::new();
    inspector
        .for_each(&inspect::source::Source::Elf(elf), |info| {
            let size = info.size.unwrap_or(0) as u64;
            if info.sym_type == SymType::Variable && size > 0 {
                symbols.push(DataSymbol {
                    addr: info.addr,
                    size,
                    name: info.name.to_string(),
                });
            }
            ControlFlow::Continue(())
        })
        .ok()?;
    // .symtab and .dynsym both list exported variables, and aliases share an address: keep
    // the largest, preferring a name without a leading underscore (`environ`, not `__environ`).
    symbols.sort_by(|a, b| {
        (
            a.addr,
            std::cmp::Reverse(a.size),
            a.name.starts_with('_'),
            &a.name,
        )
            .cmp(&(
                b.addr,
                std::cmp::Reverse(b.size),
                b.name.starts_with('_'),
                &b.name,
            ))
    });
    symbols.dedup_by_key(|symbol| symbol.addr);
    Some(ElfData { loads, symbols })
}

/// Where x86-64 modules, BPF programs and trampolines live (and, under KASLR, the top of
/// kernel text, which merely costs a /proc/modules read).
const KERNEL_MODULE_AREA: u64 = 0xffff_ffff_a000_0000;

/// `/proc/modules` lines: `name size refcount deps state address`.
fn read_modules() -> Vec<ModuleRange> {
    fs::read_to_string("/proc/modules")
        .map(|text| parse_modules(&text))
        .unwrap_or_default()
}

fn parse_modules(text: &str) -> Vec<ModuleRange> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let size: u64 = fields.get(1)?.parse().ok()?;
            let start = u64::from_str_radix(fields.get(5)?.trim_start_matches("0x"), 16).ok()?;
            (start != 0).then(|| ModuleRange {
                name: fields[0].to_string(),
                start,
                end: start + size,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_module_ranges_and_skips_hidden_addresses() {
        let text = "nouveau 2760704 0 - Live 0xffffffffc0a00000\n\
                    lt_plain 16384 0 - Live 0x0000000000000000\n\
                    garbage\n";
        let modules = parse_modules(text);
        assert_eq!(modules.len(), 1);
        assert_eq!(modules[0].name, "nouveau");
        assert_eq!(modules[0].end - modules[0].start, 2_760_704);
    }

    #[test]
    fn kallsyms_is_read_again_only_when_modules_come_or_go() {
        let mut symbols = Symbols::new();
        let before = parse_modules("nouveau 2760704 0 - Live 0xffffffffc0a00000\n");
        symbols.sync_modules(before);
        // Reference counts and states change all the time; the symbols do not.
        assert!(!symbols.sync_modules(parse_modules(
            "nouveau 2760704 3 - Live 0xffffffffc0a00000\n"
        )));
        assert!(symbols.sync_modules(parse_modules(
            "nouveau_svmm 20480 0 - Loading 0xffffffffc02f3000\n\
             nouveau 2760704 3 - Live 0xffffffffc0a00000\n"
        )));
        // Unloaded and loaded again elsewhere: different symbols.
        assert!(symbols.sync_modules(parse_modules(
            "nouveau_svmm 20480 0 - Live 0xffffffffc04fd000\n\
             nouveau 2760704 3 - Live 0xffffffffc0a00000\n"
        )));
        assert_eq!(
            symbols.module_of(0xffff_ffff_c04f_d010).as_deref(),
            Some("nouveau_svmm")
        );
    }

    /// A variable of this test binary, in `.bss`, under an unmangled name.
    #[no_mangle]
    static LOCKTRACE_DATA_SYMBOL_PROBE: std::sync::atomic::AtomicU64 =
        std::sync::atomic::AtomicU64::new(0);

    #[test]
    fn names_a_variable_of_this_process_by_its_elf_symbol() {
        let mut symbols = Symbols::new();
        let addr = std::hint::black_box(&raw const LOCKTRACE_DATA_SYMBOL_PROBE) as u64;
        let pid = std::process::id();
        let at = |offset| DataLocation {
            symbol: "LOCKTRACE_DATA_SYMBOL_PROBE".into(),
            offset,
            size: Some(8),
        };
        assert_eq!(symbols.user_data_symbol(pid, addr), Some(at(0)));
        assert_eq!(symbols.user_data_symbol(pid, addr + 4), Some(at(4)));
        // Heap and stack addresses are no variable's.
        let heap = Box::new(0u64);
        assert_eq!(symbols.user_data_symbol(pid, &raw const *heap as u64), None);
        let local = 0u64;
        assert_eq!(
            symbols.user_data_symbol(pid, std::hint::black_box(&raw const local) as u64),
            None
        );
    }

    #[test]
    fn parses_maps_lines_and_finds_the_bss_after_a_file_mapping() {
        let text = "55d0a1200000-55d0a1201000 r--p 00000000 08:01 1234    /usr/bin/prog\n\
                    55d0a1201000-55d0a1202000 r-xp 00001000 08:01 1234    /usr/bin/prog\n\
                    55d0a1203000-55d0a1204000 rw-p 00002000 08:01 1234    /usr/bin/prog\n\
                    55d0a1204000-55d0a1206000 rw-p 00000000 00:00 0 \n\
                    55d0a2000000-55d0a2021000 rw-p 00000000 00:00 0       [heap]\n\
                    7f0000000000-7f0000001000 r--p 00000000 08:01 99      /tmp/gone (deleted)\n";
        let maps = parse_maps(text);
        assert_eq!(maps.len(), 6);
        assert_eq!(
            maps[0].file.as_ref().map(|f| f.path.as_str()),
            Some("/usr/bin/prog")
        );
        assert!(maps[3].file.is_none() && maps[4].file.is_none() && maps[5].file.is_none());
        // PIE: text at vaddr 0x1000, data at 0x3000 (file offset 0x2000), bss up to 0x5800.
        let loads = [
            LoadSegment {
                offset: 0,
                vaddr: 0,
                memsz: 0x800,
            },
            LoadSegment {
                offset: 0x1000,
                vaddr: 0x1000,
                memsz: 0x800,
            },
            LoadSegment {
                offset: 0x2000,
                vaddr: 0x3000,
                memsz: 0x2800,
            },
        ];
        let (file, first) = file_of(&maps, 0x55d0_a120_5010).unwrap();
        assert_eq!(file.inode, 1234);
        assert_eq!(elf_vaddr(first, &loads, 0x55d0_a120_5010), Some(0x5010));
        assert_eq!(elf_vaddr(first, &loads, 0x55d0_a120_3020), Some(0x3020));
        assert!(file_of(&maps, 0x55d0_a200_0010).is_none());
    }

    #[test]
    fn symbolizes_a_function_of_this_process() {
        let mut symbols = Symbols::new();
        let addr = parses_module_ranges_and_skips_hidden_addresses as *const () as u64;
        let frames = symbols.user_frames(std::process::id(), &[addr]);
        let symbol = frames[0].symbol.clone().unwrap_or_default();
        assert!(
            symbol.contains("parses_module_ranges"),
            "got {:?}",
            frames[0]
        );
        assert_eq!(frames[0].offset, 0);
    }
}
