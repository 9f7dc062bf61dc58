//! What `df` shows for the mount: the space of the local disk that holds the cache and
//! the staging files, because that is what bounds how much can be written before the
//! uploads catch up (the store's own size is unknown and usually much larger).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

#[derive(Debug, Default, Clone, Copy)]
pub struct Space {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub ffree: u64,
    pub bsize: u32,
}

pub fn local_space(path: &Path) -> Space {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return Space::default();
    };
    // SAFETY: statvfs writes into the zeroed struct we own; c is a valid C string.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) != 0 {
            return Space {
                bsize: 4096,
                ..Space::default()
            };
        }
        // Report in units of the fragment size, as statvfs does.
        Space {
            blocks: s.f_blocks as u64,
            bfree: s.f_bfree as u64,
            bavail: s.f_bavail as u64,
            ffree: s.f_ffree as u64,
            bsize: s.f_frsize as u32,
        }
    }
}
