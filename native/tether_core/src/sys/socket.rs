//! Unix sockets that carry descriptors: one message, its fds as `SCM_RIGHTS` (the watchdog's
//! and the spawner's channels).

use nix::errno::Errno;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The most descriptors one message carries.
pub const MAX_FDS: usize = 8;

/// Room for a control message of up to [`MAX_FDS`] descriptors, aligned as cmsghdr wants.
#[repr(C, align(8))]
struct Control([u8; 64]);

/// Sends one message with `fds` as `SCM_RIGHTS` (blocking).
pub fn send_with_fds(socket: RawFd, bytes: &[u8], fds: &[RawFd]) -> Result<(), Errno> {
    if fds.len() > MAX_FDS {
        return Err(Errno::EINVAL);
    }
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let mut control = Control([0; 64]);
    // SAFETY: msghdr is plain data; zeroed is a valid value.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    if !fds.is_empty() {
        let size = std::mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
        let (space, len) = unsafe { (libc::CMSG_SPACE(size), libc::CMSG_LEN(size)) };
        message.msg_control = control.0.as_mut_ptr().cast();
        message.msg_controllen = space as usize;
        // SAFETY: the 64-byte buffer holds a cmsghdr and MAX_FDS ints; the header comes from
        // CMSG_FIRSTHDR over that buffer.
        unsafe {
            let header = libc::CMSG_FIRSTHDR(&message);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = len as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(header).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    loop {
        // SAFETY: `message` points to live buffers for the duration of the call.
        let n = unsafe { libc::sendmsg(socket, &message, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// Receives one message into `buf` and its descriptors (close-on-exec). `Ok((0, _))`: end of
/// file. A message or control data that did not fit is `EMSGSIZE` (its fds are closed).
pub fn receive_with_fds(socket: RawFd, buf: &mut [u8]) -> Result<(usize, Vec<OwnedFd>), Errno> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = Control([0; 64]);
    loop {
        // SAFETY: msghdr is plain data; zeroed is a valid value.
        let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.0.as_mut_ptr().cast();
        message.msg_controllen = control.0.len();
        // SAFETY: `message` points to live buffers for the duration of the call.
        let n = unsafe { libc::recvmsg(socket, &mut message, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            match Errno::last() {
                Errno::EINTR => continue,
                e => return Err(e),
            }
        }
        let mut fds = Vec::new();
        // SAFETY: the kernel filled `message`; the CMSG_* walk stays inside its control buffer.
        unsafe {
            let mut header = libc::CMSG_FIRSTHDR(&message);
            while !header.is_null() {
                if (*header).cmsg_level == libc::SOL_SOCKET
                    && (*header).cmsg_type == libc::SCM_RIGHTS
                {
                    let data = libc::CMSG_DATA(header).cast::<RawFd>();
                    let bytes = (*header).cmsg_len as usize - (data as usize - header as usize);
                    for i in 0..bytes / std::mem::size_of::<RawFd>() {
                        fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                    }
                }
                header = libc::CMSG_NXTHDR(&message, header);
            }
        }
        if message.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
            return Err(Errno::EMSGSIZE);
        }
        return Ok((n as usize, fds));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys;
    use std::os::fd::AsRawFd;

    #[test]
    fn fds_travel_with_a_message() {
        let (a, b) = sys::seqpacket_pair().unwrap();
        let (read, write) = sys::input_pipe(0).unwrap();
        send_with_fds(a.as_raw_fd(), b"hello", &[write.as_raw_fd()]).unwrap();
        drop(write);
        let mut buf = [0u8; 16];
        let (n, fds) = receive_with_fds(b.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 1);
        // SAFETY: F_GETFD on a valid fd.
        let flags = unsafe { libc::fcntl(fds[0].as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        sys::write(fds[0].as_raw_fd(), b"x").unwrap();
        drop(fds);
        let mut got = [0u8; 4];
        assert_eq!(sys::read(read.as_raw_fd(), &mut got), Ok(1));
        assert_eq!(&got[..1], b"x");
        drop(a);
        assert_eq!(receive_with_fds(b.as_raw_fd(), &mut buf).unwrap().0, 0);
    }
}
