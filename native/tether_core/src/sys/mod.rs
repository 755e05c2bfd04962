//! Thin, checked wrappers over the few syscalls the rest of the crate needs. Every raw result
//! goes through [`cvt`], so errors are `Errno` values and never ignored by accident.

pub mod clone3;
mod fd;
mod pidfd;
mod proc;
mod pty;
mod socket;

pub use fd::*;
pub use pidfd::*;
pub use proc::*;
pub use pty::*;
pub use socket::*;

use nix::errno::Errno;

/// Turns a `-1` return into the thread's `Errno`.
pub fn cvt(ret: libc::c_int) -> Result<libc::c_int, Errno> {
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// Like [`cvt`], retrying on `EINTR`.
pub fn cvt_retry(mut f: impl FnMut() -> libc::c_int) -> Result<libc::c_int, Errno> {
    loop {
        match cvt(f()) {
            Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}
