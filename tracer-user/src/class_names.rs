//! Names for the classes the eBPF side reports, from its class sources (pseudo-lock id,
//! init key, init call site, lock instance): the one place that decides them, for the
//! live graph and the held-lock table alike. Spellings are `lockgraph::naming`'s.
use lockgraph::{naming, Frame, NameSource};
use tracer_common::{kind, pseudo};

use crate::symbols::Symbols;

/// A pseudo-lock by its wire id.
pub fn pseudo_lock(id: u64) -> String {
    match id {
        pseudo::FS_RECLAIM => naming::FS_RECLAIM.to_string(),
        pseudo::MMU_NOTIFIER_INVALIDATE_RANGE_START => {
            naming::MMU_NOTIFIER_INVALIDATE_RANGE_START.to_string()
        }
        other => naming::unknown_pseudo_lock(other),
    }
}

/// A kernel class learnt at its init call: named by the name string the call passed; a
/// class the eBPF side keyed by the init call site instead (no name and key passed, or
/// `--class-by-init-site`) is that site, a kernel text address, named by its symbol.
pub fn init_key(symbols: &mut Symbols, name: Option<String>, key: u64) -> (String, NameSource) {
    if let Some(name) = name.filter(|name| !name.is_empty()) {
        return (name, NameSource::InitName);
    }
    let frame = symbols.kernel_frames(&[key]).pop();
    match frame
        .as_ref()
        .and_then(|frame| Some((frame.symbol.as_deref()?, frame.offset)))
    {
        Some(symbol) => (naming::init_site(Some(symbol), key), NameSource::InitSite),
        None => (naming::unnamed_init_key(key), NameSource::InitName),
    }
}

/// The class of user locks initialised at `site` (a return address) in process `pid`.
pub fn init_site(symbols: &mut Symbols, pid: u32, site: u64) -> String {
    let frame = symbols.user_frames(pid, &[site]).pop();
    let symbol = frame
        .as_ref()
        .and_then(|frame| Some((frame.symbol.as_deref()?, frame.offset)));
    naming::init_site(symbol, site)
}

/// The size of a lock of this wire kind where it is fixed by the ABI (glibc on x86-64:
/// `pthread_mutex_t` 40 bytes, `pthread_rwlock_t` 56), so that an array of locks names its
/// elements. Kernel lock sizes depend on the configuration: unknown.
pub fn lock_size(lock_kind: u32) -> Option<u64> {
    match lock_kind {
        kind::PTHREAD_MUTEX => Some(40),
        kind::PTHREAD_RWLOCK => Some(56),
        _ => None,
    }
}

/// A lock whose initialisation was not seen (`scope` 0: a kernel lock, else the process):
/// a static lock by its data symbol (`chop[2]` for an element of an array of locks), any
/// other by the function that acquired it in `stack`.
pub fn instance(
    symbols: &mut Symbols,
    scope: u32,
    lock: u64,
    lock_kind: u32,
    stack: &[Frame],
) -> (String, NameSource) {
    match static_name(symbols, scope, lock, lock_kind) {
        Some(name) => (name, NameSource::Symbol),
        None => (
            naming::acquired_at(naming::acquisition_site(stack), lock),
            NameSource::AcquireSite,
        ),
    }
}

/// A static lock's name from the variable it lies in (`lock_a`, `chop[2]`); `None` for
/// heap, stack and anonymous memory.
pub fn static_name(symbols: &mut Symbols, scope: u32, lock: u64, lock_kind: u32) -> Option<String> {
    let at = if scope == 0 {
        symbols.kernel_data_symbol(lock)
    } else {
        symbols.user_data_symbol(scope, lock)
    }?;
    Some(naming::data_symbol(
        &at.symbol,
        at.offset,
        at.size,
        lock_size(lock_kind),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_locks_have_lockdeps_names() {
        assert_eq!(pseudo_lock(pseudo::FS_RECLAIM), "fs_reclaim");
        assert_eq!(
            pseudo_lock(pseudo::MMU_NOTIFIER_INVALIDATE_RANGE_START),
            "mmu_notifier_invalidate_range_start"
        );
        assert_eq!(pseudo_lock(99), "pseudo#99");
    }

    #[test]
    fn an_unseen_instance_is_named_by_the_function_that_took_it() {
        let mut symbols = Symbols::new();
        let stack = [
            Frame::symbol("mutex_lock", 5),
            Frame::symbol("nvkm_uvmm_mthd", 0x4d5),
        ];
        // No kernel data symbol at a user-space-looking address on this host.
        let (name, source) = instance(&mut symbols, 0, 0x10, kind::MUTEX, &stack);
        assert_eq!(
            (name.as_str(), source),
            ("lock@nvkm_uvmm_mthd", NameSource::AcquireSite)
        );
        let (name, _) = instance(&mut symbols, 0, 0x10, kind::MUTEX, &[Frame::addr(1)]);
        assert_eq!(name, "lock@0x10");
        let named = init_key(&mut symbols, Some("&vmm->mutex".into()), 0xff);
        assert_eq!(named, ("&vmm->mutex".to_string(), NameSource::InitName));
        // No name and no symbol at the site: the key's address.
        assert_eq!(init_key(&mut symbols, None, 0xff).0, "class@0xff");
        assert_eq!(
            init_key(&mut symbols, Some(String::new()), 0xff).0,
            "class@0xff"
        );
    }
}
