//! The size of an exported symbol, from the dynamic symbol table, so that the loader never
//! reads past the end of a symbol that merely has the declaration's name.
//!
//! glibc's `dladdr1(RTLD_DL_SYMENT)` hands out the symbol's ELF entry, `st_size` included. On
//! other platforms the size is unknown and the loader relies on the magic bytes alone.

/// The size in bytes of the symbol that starts at `address`, when the platform can tell.
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
pub(crate) fn size_at(address: *const u8) -> Option<usize> {
    use std::ffi::{c_char, c_int, c_void};

    #[repr(C)]
    struct DlInfo {
        dli_fname: *const c_char,
        dli_fbase: *mut c_void,
        dli_sname: *const c_char,
        dli_saddr: *mut c_void,
    }

    /// `Elf64_Sym`.
    #[repr(C)]
    struct Elf64Sym {
        st_name: u32,
        st_info: u8,
        st_other: u8,
        st_shndx: u16,
        st_value: u64,
        st_size: u64,
    }

    const RTLD_DL_SYMENT: c_int = 1;

    unsafe extern "C" {
        fn dladdr1(
            address: *const c_void,
            info: *mut DlInfo,
            extra: *mut *mut c_void,
            flags: c_int,
        ) -> c_int;
    }

    let mut info = DlInfo {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    };
    let mut entry: *mut c_void = std::ptr::null_mut();
    // SAFETY: `dladdr1` only reads the loader's tables; both out-pointers point to live locals
    // of the types glibc documents for RTLD_DL_SYMENT (`Dl_info`, `const ElfW(Sym) *`).
    let found = unsafe { dladdr1(address.cast(), &mut info, &mut entry, RTLD_DL_SYMENT) };
    if found == 0 || entry.is_null() || info.dli_saddr.cast_const().cast::<u8>() != address {
        return None;
    }
    // SAFETY: on success with RTLD_DL_SYMENT, `entry` points to the symbol's entry in the
    // dynamic symbol table of a loaded object, valid while the object stays loaded (forever).
    let size = unsafe { (*entry.cast::<Elf64Sym>()).st_size };
    usize::try_from(size).ok()
}

/// The size in bytes of the symbol that starts at `address`, when the platform can tell.
#[cfg(not(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64")))]
pub(crate) fn size_at(_address: *const u8) -> Option<usize> {
    None
}
