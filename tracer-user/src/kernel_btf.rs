//! A minimal reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`) for the facts the
//! kernel probes need at load time and aya's public `Btf` API does not expose: a struct
//! member's byte offset (`task_struct.flags`), an enumerator's value (6.x's generated
//! `___GFP_*_BIT`s) and a tracepoint argument's index (`gfp_flags` of `kmem:kmalloc`).
//! Layout: `include/uapi/linux/btf.h`.
use std::collections::HashMap;

pub struct KernelBtf {
    data: Vec<u8>,
    strings: usize,
    strings_len: usize,
    /// Offset in `data` of every type, by type id (id 0 is `void`).
    types: Vec<usize>,
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The running kernel's BTF as our reader sees it, read and parsed once per start (the
/// file is several MiB; capability probe, globals and attach all need it).
pub fn kernel_btf() -> Option<&'static KernelBtf> {
    static BTF: std::sync::OnceLock<Option<KernelBtf>> = std::sync::OnceLock::new();
    BTF.get_or_init(KernelBtf::from_sys_fs).as_ref()
}

/// The running kernel's BTF as aya parses it (for loading fentry/fexit/tp_btf programs),
/// once per start; the error as text.
pub fn aya_btf() -> Result<&'static aya::Btf, &'static str> {
    static BTF: std::sync::OnceLock<Result<aya::Btf, String>> = std::sync::OnceLock::new();
    BTF.get_or_init(|| aya::Btf::from_sys_fs().map_err(|err| err.to_string()))
        .as_ref()
        .map_err(String::as_str)
}

impl KernelBtf {
    fn from_sys_fs() -> Option<Self> {
        Self::parse(std::fs::read(KERNEL_BTF).ok()?)
    }

    pub fn parse(data: Vec<u8>) -> Option<Self> {
        let u32_at = |off: usize| -> Option<u32> {
            Some(u32::from_le_bytes(data.get(off..off + 4)?.try_into().ok()?))
        };
        if data.get(0..2)? != [0x9f, 0xeb] {
            return None; // big-endian or not BTF
        }
        let hdr_len = u32_at(4)? as usize;
        let type_off = hdr_len + u32_at(8)? as usize;
        let type_len = u32_at(12)? as usize;
        let strings = hdr_len + u32_at(16)? as usize;
        let strings_len = u32_at(20)? as usize;
        let mut types = vec![0];
        let mut off = type_off;
        while off < type_off + type_len {
            types.push(off);
            let info = u32_at(off + 4)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            off += 12
                + match kind {
                    KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                    KIND_ARRAY => 12,
                    KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                    KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                    _ => 0,
                };
        }
        Some(Self {
            data,
            strings,
            strings_len,
            types,
        })
    }

    fn u32_at(&self, off: usize) -> u32 {
        self.data.get(off..off + 4).map_or(0, |bytes| {
            u32::from_le_bytes(bytes.try_into().unwrap_or_default())
        })
    }

    fn name(&self, name_off: u32) -> &str {
        let start = self.strings + name_off as usize;
        let end = self.strings + self.strings_len;
        let Some(bytes) = self.data.get(start..end) else {
            return "";
        };
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        std::str::from_utf8(&bytes[..len]).unwrap_or("")
    }

    /// Byte offset of `member` in `struct name` (the first struct of that name), looking
    /// into anonymous structs and unions (6.x's `mm_struct` keeps all of its fields in one).
    pub fn member_offset(&self, name: &str, member: &str) -> Option<u32> {
        self.types.iter().skip(1).find_map(|&off| {
            let info = self.u32_at(off + 4);
            if (info >> 24) & 0x1f != KIND_STRUCT || self.name(self.u32_at(off)) != name {
                return None;
            }
            self.member_offset_in(off, member, 0)
        })
    }

    /// `member`'s byte offset in the struct or union at `off`, `depth` anonymous levels in.
    fn member_offset_in(&self, off: usize, member: &str, depth: u32) -> Option<u32> {
        let info = self.u32_at(off + 4);
        let bitfield_encoded = info & (1 << 31) != 0;
        for i in 0..(info & 0xffff) as usize {
            let m = off + 12 + 12 * i;
            let bits = self.u32_at(m + 8);
            let bits = if bitfield_encoded {
                bits & 0xff_ffff
            } else {
                bits
            };
            let member_name = self.name(self.u32_at(m));
            if member_name == member {
                return (bits % 8 == 0).then_some(bits / 8);
            }
            if member_name.is_empty() && depth < 4 && bits % 8 == 0 {
                let Some(&inner) = self.types.get(self.u32_at(m + 4) as usize) else {
                    continue;
                };
                let kind = (self.u32_at(inner + 4) >> 24) & 0x1f;
                if kind == KIND_STRUCT || kind == KIND_UNION {
                    if let Some(found) = self.member_offset_in(inner, member, depth + 1) {
                        return Some(bits / 8 + found);
                    }
                }
            }
        }
        None
    }

    /// Index of the first argument of type `type_name` (a typedef: `gfp_t`) of tracepoint
    /// `name` as a BTF raw tracepoint sees it: in the prototype
    /// `typedef void (*btf_trace_NAME)(void *__data, ...)`, after `__data`. By type, as
    /// these prototypes keep no argument names in BTF.
    pub fn tracepoint_arg_index(&self, name: &str, type_name: &str) -> Option<u32> {
        let kind = |off: usize| (self.u32_at(off + 4) >> 24) & 0x1f;
        let typedef = format!("btf_trace_{name}");
        let &off =
            self.types.iter().skip(1).find(|&&off| {
                kind(off) == KIND_TYPEDEF && self.name(self.u32_at(off)) == typedef
            })?;
        let ptr = *self.types.get(self.u32_at(off + 8) as usize)?;
        if kind(ptr) != KIND_PTR {
            return None;
        }
        let proto = *self.types.get(self.u32_at(ptr + 8) as usize)?;
        if kind(proto) != KIND_FUNC_PROTO {
            return None;
        }
        let params = (self.u32_at(proto + 4) & 0xffff) as usize;
        let index = (0..params).position(|i| {
            let param_type = self.u32_at(proto + 12 + 8 * i + 4) as usize;
            self.types.get(param_type).is_some_and(|&t| {
                param_type != 0 && kind(t) == KIND_TYPEDEF && self.name(self.u32_at(t)) == type_name
            })
        })?;
        u32::try_from(index.checked_sub(1)?).ok()
    }

    /// Every enumerator whose name starts with `prefix`, with its value.
    pub fn enumerators(&self, prefix: &str) -> HashMap<String, i64> {
        let mut found = HashMap::new();
        for &off in self.types.iter().skip(1) {
            let info = self.u32_at(off + 4);
            if (info >> 24) & 0x1f != KIND_ENUM {
                continue;
            }
            for i in 0..(info & 0xffff) as usize {
                let e = off + 12 + 8 * i;
                let name = self.name(self.u32_at(e));
                if name.starts_with(prefix) {
                    found.insert(name.to_string(), i64::from(self.u32_at(e + 4) as i32));
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_btf_gives_the_gfp_argument_of_kmem_tracepoints() {
        let btf = super::kernel_btf().expect("this host has kernel BTF (../shared/ENVIRONMENT.md)");
        // (call_site, ptr, s, gfp_flags, node) since 6.1; kmalloc has bytes_req/alloc before.
        let cache = btf.tracepoint_arg_index("kmem_cache_alloc", "gfp_t");
        let kmalloc = btf.tracepoint_arg_index("kmalloc", "gfp_t");
        assert!(cache.is_some_and(|i| (2..=5).contains(&i)), "{cache:?}");
        assert!(kmalloc.is_some_and(|i| (2..=5).contains(&i)), "{kmalloc:?}");
        assert_ne!(cache, kmalloc);
        assert_eq!(
            btf.tracepoint_arg_index("kmem_cache_alloc", "no_such_type_t"),
            None
        );
        assert_eq!(
            btf.tracepoint_arg_index("no_such_tracepoint", "gfp_t"),
            None
        );
    }

    #[test]
    fn host_btf_has_task_flags() {
        let btf = super::kernel_btf().expect("this host has kernel BTF (../shared/ENVIRONMENT.md)");
        let offset = btf.member_offset("task_struct", "flags");
        assert!(offset.is_some_and(|off| off > 0 && off < 256), "{offset:?}");
    }

    #[test]
    fn members_of_anonymous_structs_are_found_with_their_offset() {
        let btf = super::kernel_btf().expect("this host has kernel BTF (../shared/ENVIRONMENT.md)");
        // 6.x's mm_struct holds every field in an anonymous struct; mm_users comes before
        // exe_file there, and both are found at different, plausible offsets.
        let exe = btf.member_offset("mm_struct", "exe_file");
        let users = btf.member_offset("mm_struct", "mm_users");
        assert!(exe.is_some_and(|off| off > 0 && off < 4096), "{exe:?}");
        assert!(users.is_some_and(|off| off < exe.unwrap()), "{users:?}");
        assert!(btf.member_offset("vm_area_struct", "vm_file").is_some());
        assert!(btf.member_offset("task_struct", "mm").is_some());
        assert_eq!(btf.member_offset("mm_struct", "no_such_member"), None);
    }
}
