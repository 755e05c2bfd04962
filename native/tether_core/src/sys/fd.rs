//! Descriptors: pipes, sockets, eventfds, /dev/null, and reads and writes that never block.

use super::cvt;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Takes ownership of a fresh descriptor, moving it above 2 so that it can never be mistaken for
/// a standard stream (the VM may run with fd 0, 1 or 2 closed).
pub(super) fn own_above_stdio(fd: RawFd) -> Result<OwnedFd, Errno> {
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    if fd > 2 {
        return Ok(owned);
    }
    // SAFETY: F_DUPFD_CLOEXEC on a valid fd has no memory effects.
    let moved = cvt(unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: as above, a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

/// A close-on-exec pipe for a child's output: `(read end, write end)`. Our read end is
/// non-blocking; the child's write end is blocking, as programs expect.
pub fn output_pipe(size: usize) -> Result<(OwnedFd, OwnedFd), Errno> {
    let (read, write) = pipe(size)?;
    set_nonblocking(&read)?;
    Ok((read, write))
}

/// A close-on-exec pipe for a child's input: `(read end, write end)`. Our write end is
/// non-blocking; the child's read end is blocking.
pub fn input_pipe(size: usize) -> Result<(OwnedFd, OwnedFd), Errno> {
    let (read, write) = pipe(size)?;
    set_nonblocking(&write)?;
    Ok((read, write))
}

fn pipe(size: usize) -> Result<(OwnedFd, OwnedFd), Errno> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is a valid array of two ints.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    let read = own_above_stdio(fds[0])?;
    let write = own_above_stdio(fds[1])?;
    if size > 0 {
        // Best effort: an unprivileged user past the pipe quota keeps the default size.
        // SAFETY: F_SETPIPE_SZ takes an int and has no memory effects.
        let _ = unsafe { libc::fcntl(read.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int) };
    }
    Ok((read, write))
}

/// A close-on-exec unix `SOCK_SEQPACKET` pair, both ends blocking (the watchdog's and the
/// spawner's channel: one message per record, descriptors passed along as `SCM_RIGHTS`).
pub fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), Errno> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is a valid array of two ints.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: two fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A new descriptor for the same open file (close-on-exec).
pub fn duplicate(fd: &OwnedFd) -> Result<OwnedFd, Errno> {
    // SAFETY: F_DUPFD_CLOEXEC on a valid fd has no memory effects.
    let new = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Writes what it can of `data` without blocking, retrying on `EINTR`.
pub fn write(fd: RawFd, data: &[u8]) -> Result<usize, Errno> {
    loop {
        // SAFETY: `data` is valid for `data.len()` bytes.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// Sets `O_NONBLOCK`.
pub fn set_nonblocking(fd: &OwnedFd) -> Result<(), Errno> {
    // SAFETY: F_GETFL/F_SETFL on a valid fd have no memory effects.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok(())
}

/// `/dev/null`, opened read-write and close-on-exec.
pub fn open_dev_null() -> Result<OwnedFd, Errno> {
    // SAFETY: the path is a NUL-terminated literal.
    let fd = cvt(unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) })?;
    own_above_stdio(fd)
}

/// A non-blocking, close-on-exec eventfd.
pub fn eventfd() -> Result<OwnedFd, Errno> {
    // SAFETY: eventfd has no memory arguments.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    own_above_stdio(fd)
}

/// Adds 1 to an eventfd, waking whoever polls it.
pub fn eventfd_signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64. A full counter (EAGAIN) still wakes the poller.
    let _ = unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

/// Resets an eventfd's counter.
pub fn eventfd_drain(fd: RawFd) {
    let mut buf: u64 = 0;
    // SAFETY: reads 8 bytes into a valid u64.
    let _ = unsafe { libc::read(fd, (&mut buf as *mut u64).cast(), 8) };
}

/// Reads into `buf`, retrying on `EINTR`. `Ok(0)` is end of file.
pub fn read(fd: RawFd, buf: &mut [u8]) -> Result<usize, Errno> {
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        match Errno::last() {
            Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// Bytes waiting in a pipe.
pub fn bytes_available(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    match cvt(unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) }) {
        Ok(_) => n.max(0) as usize,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_pipe_reads_what_it_holds_and_never_blocks() {
        let (read_end, write_end) = output_pipe(65536).unwrap();
        assert!(read_end.as_raw_fd() > 2 && write_end.as_raw_fd() > 2);
        let mut buffer = [0u8; 16];
        assert_eq!(read(read_end.as_raw_fd(), &mut buffer), Err(Errno::EAGAIN));
        assert_eq!(write(write_end.as_raw_fd(), b"hello").unwrap(), 5);
        assert_eq!(bytes_available(read_end.as_raw_fd()), 5);
        assert_eq!(read(read_end.as_raw_fd(), &mut buffer).unwrap(), 5);
        assert_eq!(&buffer[..5], b"hello");
        drop(write_end);
        assert_eq!(read(read_end.as_raw_fd(), &mut buffer).unwrap(), 0);
    }

    #[test]
    fn an_eventfd_wakes_until_drained() {
        let fd = eventfd().unwrap();
        let mut poll = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = |poll: &mut libc::pollfd| unsafe { libc::poll(poll, 1, 0) };
        assert_eq!(ready(&mut poll), 0);
        eventfd_signal(fd.as_raw_fd());
        eventfd_signal(fd.as_raw_fd());
        assert_eq!(ready(&mut poll), 1);
        eventfd_drain(fd.as_raw_fd());
        assert_eq!(ready(&mut poll), 0);
    }

    #[test]
    fn a_seqpacket_pair_keeps_message_boundaries() {
        let (a, b) = seqpacket_pair().unwrap();
        write(a.as_raw_fd(), b"one").unwrap();
        write(a.as_raw_fd(), b"two!").unwrap();
        let mut buffer = [0u8; 16];
        // SAFETY: `buffer` has room for its length.
        let n = unsafe { libc::recv(b.as_raw_fd(), buffer.as_mut_ptr().cast(), 16, 0) };
        assert_eq!(&buffer[..n as usize], b"one");
        // SAFETY: as above.
        let n = unsafe { libc::recv(b.as_raw_fd(), buffer.as_mut_ptr().cast(), 16, 0) };
        assert_eq!(&buffer[..n as usize], b"two!");
    }
}
