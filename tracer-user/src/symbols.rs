//! Symbolization of kernel and user addresses with blazesym, into lockgraph frames.
//! blazesym reads kallsyms; it does not name the module of a kallsyms symbol, so module
//! names (`[nouveau]`) come from the module address ranges in /proc/modules.
use std::{fs, num::NonZeroU32};

use blazesym::{
    symbolize::{
        source::{Kernel, Process, Source},
        Input, Symbolized, Symbolizer,
    },
    MaybeDefault, Pid,
};
use lockgraph::Frame;

/// A loaded module's text range, for `[module]` annotations.
#[derive(Debug, Clone)]
struct ModuleRange {
    name: String,
    start: u64,
    end: u64,
}

pub struct Symbols {
    symbolizer: Symbolizer,
    modules: Vec<ModuleRange>,
}

impl Symbols {
    pub fn new() -> Self {
        Self { symbolizer: Symbolizer::new(), modules: read_modules() }
    }

    /// Re-read /proc/modules (a module loaded after we started).
    pub fn refresh_modules(&mut self) {
        self.modules = read_modules();
    }

    fn kernel_source() -> Source<'static> {
        Source::Kernel(Kernel {
            // kallsyms is always there; searching the disk for a vmlinux is slow and rarely
            // finds one on production machines.
            vmlinux: MaybeDefault::None,
            ..Kernel::default()
        })
    }

    fn module_of(&mut self, addr: u64) -> Option<String> {
        let find = |modules: &[ModuleRange]| {
            modules.iter().find(|m| m.start <= addr && addr < m.end).map(|m| m.name.clone())
        };
        if let Some(name) = find(&self.modules) {
            return Some(name);
        }
        // Kernel text or a module loaded since the last read: refresh once for module-range
        // addresses (kernel text lies above the module area only on some configs; cheap anyway).
        if addr >= 0xffff_ffff_a000_0000 {
            self.refresh_modules();
            return find(&self.modules);
        }
        None
    }

    pub fn kernel_frames(&mut self, addrs: &[u64]) -> Vec<Frame> {
        let source = Self::kernel_source();
        let symbolized = self.symbolizer.symbolize(&source, Input::AbsAddr(addrs)).ok();
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

    pub fn user_frames(&mut self, pid: u32, addrs: &[u64]) -> Vec<Frame> {
        let Some(pid) = NonZeroU32::new(pid) else {
            return addrs.iter().map(|&addr| Frame::addr(addr)).collect();
        };
        let source = Source::Process(Process::new(Pid::Pid(pid)));
        let symbolized = self.symbolizer.symbolize(&source, Input::AbsAddr(addrs)).ok();
        addrs
            .iter()
            .enumerate()
            .map(|(index, &addr)| match symbolized.as_ref().and_then(|all| all.get(index)) {
                Some(Symbolized::Sym(sym)) => Frame {
                    addr,
                    symbol: Some(sym.name.to_string()),
                    offset: sym.offset as u64,
                    size: sym.size.map(|size| size as u64),
                    module: sym
                        .module
                        .as_ref()
                        .and_then(|path| std::path::Path::new(path).file_name())
                        .map(|name| name.to_string_lossy().into_owned()),
                },
                _ => Frame::addr(addr),
            })
            .collect()
    }

    /// The symbol an address lies in, with its offset: names static locks (`cgroup_mutex`).
    pub fn kernel_data_symbol(&mut self, addr: u64) -> Option<(String, u64)> {
        let frame = self.kernel_frames(&[addr]).pop()?;
        let symbol = frame.symbol?;
        // A heap address far from any symbol is not a static lock.
        (frame.offset < 4096).then_some((symbol, frame.offset))
    }

}

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
            (start != 0).then(|| ModuleRange { name: fields[0].to_string(), start, end: start + size })
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
    fn symbolizes_a_function_of_this_process() {
        let mut symbols = Symbols::new();
        let addr = parses_module_ranges_and_skips_hidden_addresses as *const () as u64;
        let frames = symbols.user_frames(std::process::id(), &[addr]);
        let symbol = frames[0].symbol.clone().unwrap_or_default();
        assert!(symbol.contains("parses_module_ranges"), "got {:?}", frames[0]);
        assert_eq!(frames[0].offset, 0);
    }
}
