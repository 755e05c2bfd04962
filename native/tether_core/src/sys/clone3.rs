//! `clone3` for a vfork-style child on a stack of its own, born in a given cgroup
//! (`CLONE_INTO_CGROUP`, Linux 5.7): the kernel places it at fork time, which spares the
//! migration a write to `cgroup.procs` costs (the cgroup core's global write lock).
//!
//! glibc has no `clone3` wrapper that takes a function, and a child with `CLONE_VM` on a new
//! stack cannot return from the system call into Rust: a few instructions of assembly call the
//! child's function on its stack and `_exit` with its result. Only x86-64 has them; elsewhere
//! (and on kernels or sandboxes without `clone3`) this reports `ENOSYS` and the caller clones
//! the old way.

use nix::errno::Errno;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// `CLONE_INTO_CGROUP` from `<linux/sched.h>`.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` of `<linux/sched.h>` (version 2, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Set once the kernel said it has no `clone3`, or not this version of it.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// What a child runs: a `clone(2)`-style function.
pub type ChildMain = extern "C" fn(*mut libc::c_void) -> libc::c_int;

/// Clones a child into the cgroup whose directory `cgroup` is, running `main(arg)` on the
/// stack `stack..stack + stack_size` (its top 16-byte aligned). `flags` are `clone(2)` flags
/// with the exit signal in their low byte; with `CLONE_PIDFD` the pidfd is returned (else -1).
///
/// # Safety
/// As for `clone(2)` with the same flags: with `CLONE_VM` the child runs in the caller's
/// memory, so `main` may only make async-signal-safe calls, `arg` and the stack must outlive
/// it (with `CLONE_VFORK` the caller is suspended until it execs or exits), and nobody else may
/// use the stack.
pub unsafe fn clone_into_cgroup(
    flags: libc::c_int,
    cgroup: RawFd,
    stack: *mut u8,
    stack_size: usize,
    main: ChildMain,
    arg: *mut libc::c_void,
) -> Result<(libc::pid_t, RawFd), Errno> {
    if UNSUPPORTED.load(Ordering::Relaxed) || cgroup < 0 {
        return Err(Errno::ENOSYS);
    }
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: (flags as u32 as u64 & !0xff) | CLONE_INTO_CGROUP,
        // clone3 refuses an exit signal with CLONE_PARENT: the child then signals its parent
        // as the caller signals its own (the spawner was started with SIGCHLD).
        exit_signal: match flags & libc::CLONE_PARENT {
            0 => (flags & 0xff) as u64,
            _ => 0,
        },
        stack: stack as u64,
        stack_size: stack_size as u64,
        cgroup: cgroup as u64,
        ..CloneArgs::default()
    };
    if flags & libc::CLONE_PIDFD != 0 {
        args.pidfd = &mut pidfd as *mut libc::c_int as u64;
    }
    // SAFETY: the caller's contract; `args` and `pidfd` live across the call.
    let ret = unsafe { raw_clone3(&mut args, main, arg) };
    match ret {
        pid if pid > 0 => Ok((pid as libc::pid_t, pidfd)),
        err => {
            let errno = Errno::from_raw((-err) as i32);
            if matches!(errno, Errno::ENOSYS | Errno::E2BIG) {
                UNSUPPORTED.store(true, Ordering::Relaxed);
            }
            Err(errno)
        }
    }
}

/// The system call: returns the child's pid or `-errno` in the parent; the child calls
/// `main(arg)` on its new stack and exits with its result.
#[cfg(target_arch = "x86_64")]
unsafe fn raw_clone3(args: &mut CloneArgs, main: ChildMain, arg: *mut libc::c_void) -> i64 {
    let ret: i64;
    // SAFETY: the kernel switches the child to `args.stack + args.stack_size`, 16-byte aligned
    // (the caller's contract), as the ABI wants rsp at a `call`; the child never comes back
    // here (it calls `main`, then the exit system call), so what `main` clobbers is no matter.
    // The parent sees an ordinary system call: rcx and r11 clobbered, the result in rax, every
    // other register kept. r12 and r13 hold `arg` and `main` across it (the child gets a copy
    // of the registers).
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r12",
            "call r13",
            "mov edi, eax",
            "mov eax, {exit}",
            "syscall",
            "ud2",
            "2:",
            exit = const libc::SYS_exit,
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *mut CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") arg,
            in("r13") main,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    ret
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn raw_clone3(_: &mut CloneArgs, _: ChildMain, _: *mut libc::c_void) -> i64 {
    UNSUPPORTED.store(true, Ordering::Relaxed);
    -(libc::ENOSYS as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicI32;

    static RAN: AtomicI32 = AtomicI32::new(0);
    /// What the child read of its `/proc/self/cgroup` (it may not allocate).
    static mut SEEN: [u8; 512] = [0; 512];

    extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
        RAN.store(arg as usize as i32, Ordering::SeqCst);
        // SAFETY: plain system calls; the parent is suspended (vfork) while SEEN is written.
        unsafe {
            let fd = libc::open(c"/proc/self/cgroup".as_ptr(), libc::O_RDONLY);
            let buffer = std::ptr::addr_of_mut!(SEEN);
            libc::read(fd, buffer.cast(), 511);
            libc::close(fd);
        }
        7
    }

    /// A child cloned into a cgroup of the writable hierarchy runs there and exits with what
    /// its function returned (skipped where there is no cgroup2 to write to).
    #[test]
    fn a_child_is_born_in_the_cgroup() {
        let Ok(base) = crate::cgroup::default_base() else {
            return;
        };
        let dir = base.join(format!("tether-clone3-test-{}", std::process::id()));
        if std::fs::create_dir(&dir).is_err() {
            return;
        }
        let cdir = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        let fd = unsafe { libc::open(cdir.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
        assert!(fd >= 0);
        let mut stack = vec![0u8; 64 * 1024];
        let base = stack.as_mut_ptr();
        // Up to a 16-byte aligned top, whatever the allocation's alignment.
        let size = ((base as usize + stack.len()) & !15) - base as usize;
        // SAFETY: the child makes only system calls and stores to RAN and SEEN, then returns;
        // with CLONE_VFORK we are suspended until it exits, and the stack is its alone.
        let result = unsafe {
            clone_into_cgroup(
                libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
                fd,
                base,
                size,
                child,
                42usize as *mut libc::c_void,
            )
        };
        let (pid, pidfd) = match result {
            Ok(cloned) => cloned,
            // No clone3 (or not this version) here, or a seccomp filter refuses it.
            Err(Errno::ENOSYS | Errno::E2BIG | Errno::EPERM) => {
                let _ = std::fs::remove_dir(&dir);
                return;
            }
            Err(errno) => {
                let _ = std::fs::remove_dir(&dir);
                panic!("clone3 refused the call: {errno}");
            }
        };
        assert!(pidfd >= 0);
        // The child has exited (vfork): its cgroup was ours, and it ran its function.
        let mut status = 0;
        // SAFETY: our child; a valid pointer for the status.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert_eq!(RAN.load(Ordering::SeqCst), 42);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 7);
        // SAFETY: descriptors we own.
        unsafe {
            libc::close(pidfd);
            libc::close(fd);
        }
        // SAFETY: the child is gone; nobody writes SEEN any more.
        let seen = unsafe { *std::ptr::addr_of!(SEEN) };
        let seen = String::from_utf8_lossy(&seen);
        std::fs::remove_dir(&dir).unwrap();
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert!(seen.contains(&format!("{name}\n")), "{seen}");
    }
}
