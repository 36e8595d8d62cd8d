//! The load-time facts the kernel programs need, found on the running kernel: tracepoint
//! field offsets and argument indexes of `gfp_t`, gfp bit values, `task_struct.flags`, the
//! `--module` text range.
use std::{fs, path::Path};

use anyhow::{bail, Context as _, Result};

use crate::bpf::KernelGlobals;

/// Tracepoints whose `gfp_flags` the programs need: the global with its offset in the
/// classic record, and the global with its argument index for the BTF raw tracepoint.
const GFP_FIELDS: &[(&str, &str, &str, Option<&str>)] = &[
    (
        "kmem",
        "kmalloc",
        "GFP_OFFSET_KMALLOC",
        Some("GFP_ARG_KMALLOC"),
    ),
    (
        "kmem",
        "kmalloc_node",
        "GFP_OFFSET_KMALLOC_NODE",
        Some("GFP_ARG_KMALLOC_NODE"),
    ),
    (
        "kmem",
        "kmem_cache_alloc",
        "GFP_OFFSET_KMEM_CACHE_ALLOC",
        Some("GFP_ARG_KMEM_CACHE_ALLOC"),
    ),
    (
        "kmem",
        "kmem_cache_alloc_node",
        "GFP_OFFSET_KMEM_CACHE_ALLOC_NODE",
        Some("GFP_ARG_KMEM_CACHE_ALLOC_NODE"),
    ),
    (
        "kmem",
        "mm_page_alloc",
        "GFP_OFFSET_MM_PAGE_ALLOC",
        Some("GFP_ARG_MM_PAGE_ALLOC"),
    ),
    (
        "vmscan",
        "mm_vmscan_direct_reclaim_begin",
        "GFP_OFFSET_DIRECT_RECLAIM_BEGIN",
        None,
    ),
];

/// The record field, and the argument type, of a tracepoint's allocation flags.
const GFP_FIELD: &str = "gfp_flags";
pub(super) const GFP_TYPE: &str = "gfp_t";

pub fn tracefs_events() -> &'static str {
    if Path::new("/sys/kernel/tracing/events").exists() {
        "/sys/kernel/tracing/events"
    } else {
        "/sys/kernel/debug/tracing/events"
    }
}

/// `offset:N;` of `field` in a tracefs event `format` file.
pub fn format_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let line = line.trim();
        let decl = line.strip_prefix("field:")?.split(';').next()?;
        let name = decl.split_whitespace().last()?;
        if name != field {
            return None;
        }
        let offset = line
            .split(';')
            .find_map(|part| part.trim().strip_prefix("offset:"))?;
        offset.trim().parse().ok()
    })
}

/// The kernel programs' load-time globals for the running kernel, and `--module`'s text range.
pub fn kernel_globals(module: Option<&str>) -> Result<KernelGlobals> {
    let mut globals = KernelGlobals::default();
    if let Some(name) = module {
        globals.module_text =
            module_text_range(name).with_context(|| format!("--module {name}"))?;
    }
    let events = tracefs_events();
    for &(category, name, global, _) in GFP_FIELDS {
        let path = format!("{events}/{category}/{name}/format");
        match fs::read_to_string(&path)
            .ok()
            .and_then(|format| format_field_offset(&format, GFP_FIELD))
        {
            Some(offset) => globals.u32s.push((global, offset)),
            None => globals
                .notes
                .push(format!("{category}:{name}: no gfp_flags field in {path}")),
        }
    }
    let Some(btf) = crate::kernel_btf::kernel_btf() else {
        globals.notes.push(
            "no kernel BTF: memalloc_nofs/noreclaim scopes not checked for fs_reclaim".into(),
        );
        return Ok(globals);
    };
    for &(_, name, _, arg_global) in GFP_FIELDS {
        if let (Some(global), Some(index)) = (arg_global, btf.tracepoint_arg_index(name, GFP_TYPE))
        {
            globals.u32s.push((global, index));
        }
    }
    // A user lock initialised inside a library wrapper is classed by the wrapper's caller.
    let wrapper_offsets = [
        ("task_struct", "mm", "TASK_MM_OFFSET"),
        ("mm_struct", "exe_file", "MM_EXE_FILE_OFFSET"),
        ("vm_area_struct", "vm_file", "VMA_FILE_OFFSET"),
    ]
    .map(|(name, member, global)| (global, btf.member_offset(name, member)));
    if wrapper_offsets.iter().all(|(_, offset)| offset.is_some()) {
        for (global, offset) in wrapper_offsets {
            globals.u32s.extend(offset.map(|offset| (global, offset)));
        }
    } else {
        globals.notes.push(
            "task_struct.mm, mm_struct.exe_file or vm_area_struct.vm_file not in BTF: user \
             locks initialised inside a library are classed by the library's init site"
                .into(),
        );
    }
    match btf.member_offset("task_struct", "flags") {
        Some(offset) => globals.u32s.push(("TASK_FLAGS_OFFSET", offset)),
        None => globals
            .notes
            .push("task_struct.flags not in BTF: memalloc scopes not checked".into()),
    }
    // 6.x generates the ___GFP_*_BIT numbering from an enum (in BTF); older kernels use
    // #defines with the historical values, which the object's defaults hold (0x80, 0x400).
    let bits = btf.enumerators("___GFP_");
    for (enumerator, global) in [
        ("___GFP_DIRECT_RECLAIM_BIT", "GFP_DIRECT_RECLAIM"),
        ("___GFP_FS_BIT", "GFP_FS"),
    ] {
        if let Some(&bit) = bits.get(enumerator) {
            if (0..32).contains(&bit) {
                globals.u32s.push((global, 1u32 << bit));
            }
        }
    }
    Ok(globals)
}

/// `--module NAME`: the module's text range, `[start, end)`, from `/proc/kallsyms` (its
/// text symbols) bounded by `/proc/modules` (its size).
pub fn module_text_range(name: &str) -> Result<(u64, u64)> {
    let modules = fs::read_to_string("/proc/modules").context("reading /proc/modules")?;
    let size: u64 = modules
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next()? == name).then(|| fields.next()?.parse().ok())?
        })
        .with_context(|| format!("module {name} is not loaded (not in /proc/modules)"))?;
    let kallsyms = fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
    let tag = format!("[{name}]");
    let text: Vec<u64> = kallsyms
        .lines()
        .filter(|line| line.ends_with(&tag))
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = u64::from_str_radix(fields.next()?, 16).ok()?;
            matches!(fields.next()?, "t" | "T").then_some(address)
        })
        .filter(|&address| address != 0)
        .collect();
    let (Some(&start), Some(&last)) = (text.iter().min(), text.iter().max()) else {
        bail!("no text symbols of module {name} in /proc/kallsyms (kptr_restrict? run as root)");
    };
    // The last function's size is unknown: allow a page past its start, within the module.
    let end = (last + 4096).min(start + size.max(4096));
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gfp_offset_from_format() {
        let format = "name: kmalloc\nID: 1\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:unsigned long call_site;\toffset:8;\tsize:8;\tsigned:0;\n\
            \tfield:unsigned long gfp_flags;\toffset:40;\tsize:8;\tsigned:0;\n";
        assert_eq!(format_field_offset(format, "gfp_flags"), Some(40));
        assert_eq!(format_field_offset(format, "bytes_req"), None);
    }
}
