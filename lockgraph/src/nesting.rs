//! Lockdep's nesting annotations that a production kernel compiles away.
//!
//! Two locks of one class nested in each other are "possible recursive locking" to lockdep
//! unless the inner (or outer) acquisition says otherwise: a subclass (`down_write_nested`,
//! `mmap_write_lock_nested`, `inode_lock_nested(…, I_MUTEX_PARENT)`) or a `nest_lock`
//! (`down_write_nest_lock`). Without `CONFIG_DEBUG_LOCK_ALLOC` those are plain
//! `down_write`/`inode_lock` calls, and nothing at run time tells the nesting apart. What
//! does is where the acquisition is made: the annotation sits at a fixed place in the
//! source, so the function the lock is taken from (the first frame outside the locking
//! machinery, which is the annotating function or the one it is inlined into) identifies it.
//!
//! The table holds the annotations the measured workloads meet on Debian 6.1 and 6.12 (each
//! one found as a false "recursive locking" by `cargo xtask lockdep-compare`, where lockdep
//! showed the subclass or nest lock), cited by source. Same-class nestings elsewhere are
//! still reported: a table entry never hides a nesting from another function.

use crate::{model::Frame, naming::acquisition_site};

/// Which acquisition of the nesting carries the annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnnotatedSide {
    /// The lock already held (the parent directory of `lock_rename`).
    Held,
    /// The lock being taken inside it.
    New,
}

/// One annotation in the kernel source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NestingAnnotation {
    /// The class, by its lockdep name (`&mm->mmap_lock`).
    pub class: &'static str,
    pub side: AnnotatedSide,
    /// The functions the annotated acquisition is made from in production stacks: the
    /// annotating function and those the compiler inlines it into.
    pub functions: &'static [&'static str],
    /// The annotation itself, where it is.
    pub annotation: &'static str,
}

/// The annotations, by class.
pub const KERNEL_NESTING_ANNOTATIONS: &[NestingAnnotation] = &[
    NestingAnnotation {
        class: "&mm->mmap_lock",
        side: AnnotatedSide::New,
        // dup_mmap is static, inlined through dup_mm and copy_mm into copy_process.
        functions: &["dup_mmap", "dup_mm", "copy_mm", "copy_process"],
        annotation: "mmap_write_lock_nested(mm, SINGLE_DEPTH_NESTING) in dup_mmap \
                     (kernel/fork.c): the child's mm inside the parent's",
    },
    NestingAnnotation {
        class: "&anon_vma->rwsem",
        side: AnnotatedSide::New,
        functions: &["vm_lock_anon_vma", "mm_take_all_locks"],
        annotation: "down_write_nest_lock(&anon_vma->root->rwsem, &mm->mmap_lock) in \
                     vm_lock_anon_vma (mm/vma.c; mm/mmap.c before 6.12): every anon_vma of \
                     the mm, serialised by mm_all_locks_mutex",
    },
    NestingAnnotation {
        class: "&mapping->i_mmap_rwsem",
        side: AnnotatedSide::New,
        functions: &["vm_lock_mapping", "mm_take_all_locks"],
        annotation: "down_write_nest_lock(&mapping->i_mmap_rwsem, &mm->mmap_lock) in \
                     vm_lock_mapping (mm/vma.c; mm/mmap.c before 6.12)",
    },
    NestingAnnotation {
        class: "&inode->i_rwsem",
        side: AnnotatedSide::Held,
        // lock_rename and friends are inlined into do_renameat2 (fs/namei.c), as
        // filename_create is into its callers.
        functions: &[
            "lock_rename",
            "lock_rename_child",
            "lock_two_directories",
            "do_renameat2",
            "filename_create",
            "kern_path_create",
            "user_path_create",
            "__kern_path_locked",
            "kern_path_locked",
            "user_path_locked_at",
            "do_rmdir",
            "do_unlinkat",
        ],
        annotation: "inode_lock_nested(dir, I_MUTEX_PARENT) (fs/namei.c): the parent \
                     directory, held while the child's inode is locked",
    },
    NestingAnnotation {
        class: "&inode->i_rwsem",
        side: AnnotatedSide::New,
        functions: &["lock_two_nondirectories", "lock_two_inodes"],
        annotation: "inode_lock_nested(inode2, I_MUTEX_NONDIR2) in lock_two_nondirectories \
                     (fs/inode.c)",
    },
];

/// The annotation that makes this same-class nesting no recursive locking, if any:
/// `class` is the class's name (without a `#N` suffix), the stacks those of the held and
/// the new acquisition.
pub fn nesting_annotation(
    class: &str,
    held_stack: &[Frame],
    new_stack: &[Frame],
) -> Option<&'static NestingAnnotation> {
    let held_site = acquisition_site(held_stack);
    let new_site = acquisition_site(new_stack);
    KERNEL_NESTING_ANNOTATIONS.iter().find(|annotation| {
        let site = match annotation.side {
            AnnotatedSide::Held => held_site,
            AnnotatedSide::New => new_site,
        };
        annotation.class == class && site.is_some_and(|site| annotation.functions.contains(&site))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(symbols: &[&str]) -> Vec<Frame> {
        symbols.iter().map(|s| Frame::symbol(*s, 0x10)).collect()
    }

    #[test]
    fn fork_nests_the_childs_mmap_lock_by_annotation_elsewhere_it_is_recursive() {
        // As the everyday scenario's fork on 6.12 shows it.
        let held = stack(&["down_write_killable", "copy_process", "kernel_clone"]);
        let new = stack(&["down_write", "copy_process", "kernel_clone"]);
        let found = nesting_annotation("&mm->mmap_lock", &held, &new).unwrap();
        assert!(found.annotation.contains("SINGLE_DEPTH_NESTING"));
        // The same nesting from any other function is still lockdep's recursive locking.
        let elsewhere = stack(&["down_write", "my_driver_ioctl"]);
        assert_eq!(
            nesting_annotation("&mm->mmap_lock", &held, &elsewhere),
            None
        );
        // And the function alone is not enough: the class must be the annotated one.
        assert_eq!(nesting_annotation("&vmm->mutex", &held, &new), None);
    }

    #[test]
    fn an_annotated_outer_acquisition_covers_whatever_is_nested_inside() {
        let held = stack(&["down_write", "do_renameat2", "__x64_sys_rename"]);
        let new = stack(&["down_write", "vfs_rename", "do_renameat2"]);
        assert!(nesting_annotation("&inode->i_rwsem", &held, &new).is_some());
        // Held from vfs_rename, not annotated: recursive.
        assert_eq!(nesting_annotation("&inode->i_rwsem", &new, &new), None);
    }
}
