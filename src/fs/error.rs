//! The one error type at the filesystem boundary: every failure of an operation, with
//! the errno the kernel will see. Each layer's own error converts into it; the FUSE shim
//! logs it and replies in one place (`fuse::reply_error`).

use crate::cache::CacheError;
use crate::catalog::CatalogError;

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct FsError {
    pub errno: i32,
    pub message: String,
}

pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    pub fn new(errno: i32, message: impl Into<String>) -> FsError {
        FsError {
            errno,
            message: message.into(),
        }
    }

    /// Expected outcomes (a missing name, a full directory) are not worth a warning.
    pub fn is_routine(&self) -> bool {
        matches!(
            self.errno,
            libc::ENOENT | libc::EEXIST | libc::ENOTEMPTY | libc::ENOTDIR | libc::EISDIR
        )
    }
}

impl From<CatalogError> for FsError {
    fn from(e: CatalogError) -> FsError {
        FsError::new(e.errno(), e.to_string())
    }
}

impl From<CacheError> for FsError {
    fn from(e: CacheError) -> FsError {
        FsError::new(e.errno(), e.to_string())
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> FsError {
        FsError::new(e.raw_os_error().unwrap_or(libc::EIO), e.to_string())
    }
}
