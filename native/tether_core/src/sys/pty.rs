//! Pseudo-terminals: a pair, and its window size.

use super::{cvt, own_above_stdio};
use nix::errno::Errno;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// A pseudo-terminal: `(master, slave)`, both close-on-exec, sized and with echo as asked.
pub fn open_pty(pty: crate::command::Pty) -> Result<(OwnedFd, OwnedFd), Errno> {
    // SAFETY: posix_openpt has no memory arguments.
    let master =
        cvt(unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) })?;
    let master = own_above_stdio(master)?;
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: valid fd; `name` has room for `name.len()` bytes.
    unsafe {
        cvt(libc::grantpt(master.as_raw_fd()))?;
        cvt(libc::unlockpt(master.as_raw_fd()))?;
        let ret = libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len());
        if ret != 0 {
            return Err(Errno::from_raw(ret));
        }
    }
    // SAFETY: `name` is NUL-terminated by ptsname_r.
    let slave = cvt(unsafe {
        libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    let slave = own_above_stdio(slave)?;
    set_window_size(master.as_raw_fd(), pty.rows, pty.cols)?;
    // SAFETY: termios is plain data, filled by tcgetattr before use.
    let mut termios: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and termios pointer.
    unsafe {
        cvt(libc::tcgetattr(slave.as_raw_fd(), &mut termios))?;
        if pty.echo {
            termios.c_lflag |= libc::ECHO;
        } else {
            termios.c_lflag &= !(libc::ECHO | libc::ECHONL);
        }
        cvt(libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &termios))?;
    }
    Ok((master, slave))
}

/// Sets a terminal's size (the child gets SIGWINCH).
pub fn set_window_size(fd: RawFd, rows: u16, cols: u16) -> Result<(), Errno> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize.
    cvt(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &size) }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pty_has_the_size_it_was_given_and_takes_a_new_one() {
        let pty = crate::command::Pty {
            rows: 24,
            cols: 80,
            echo: false,
        };
        let (master, _slave) = open_pty(pty).unwrap();
        let size = |fd: RawFd| {
            // SAFETY: winsize is plain data; TIOCGWINSZ writes one.
            let mut size: libc::winsize = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            cvt(unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) }).unwrap();
            (size.ws_row, size.ws_col)
        };
        assert_eq!(size(master.as_raw_fd()), (24, 80));
        set_window_size(master.as_raw_fd(), 50, 132).unwrap();
        assert_eq!(size(master.as_raw_fd()), (50, 132));
    }
}
