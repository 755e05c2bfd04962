//! Capabilities in the child: `capset` and the ambient set, between `clone` and `execve`
//! (async-signal-safe: raw system calls on stack values only).

use crate::command::Capabilities;

/// `struct __user_cap_header_struct` of `<linux/capability.h>`.
#[repr(C)]
pub(super) struct CapHeader {
    pub(super) version: u32,
    pub(super) pid: libc::c_int,
}

/// `struct __user_cap_data_struct`: with version 3, `capget`/`capset` take two, the low and the
/// high 32 bits of each set.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct CapData {
    pub(super) effective: u32,
    pub(super) permitted: u32,
    pub(super) inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets.
pub(super) const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// The `capset` data that makes `set` the effective, permitted and inheritable set.
pub(super) fn cap_data(set: u64) -> [CapData; 2] {
    let half = |bits: u64| CapData {
        effective: bits as u32,
        permitted: bits as u32,
        inheritable: bits as u32,
    };
    [half(set & 0xffff_ffff), half(set >> 32)]
}

/// The permitted set in `capget` data.
pub(super) fn permitted_set(data: &[CapData; 2]) -> u64 {
    u64::from(data[0].permitted) | u64::from(data[1].permitted) << 32
}

/// `prctl(option, arg2, arg3, 0, 0)`, every argument an unsigned long as the kernel reads them
/// (an `int` passed to the variadic `prctl` leaves the upper half of its register unspecified,
/// and some options refuse nonzero unused arguments).
///
/// # Safety
/// As `prctl(2)` for `option`.
pub(super) unsafe fn prctl(
    option: libc::c_int,
    arg2: libc::c_ulong,
    arg3: libc::c_ulong,
) -> libc::c_int {
    let zero: libc::c_ulong = 0;
    // SAFETY: the caller's promise; the arguments are plain integers.
    unsafe { libc::prctl(option, arg2, arg3, zero, zero) }
}

/// Makes `capabilities` the child's effective, permitted, inheritable and ambient sets. Ambient
/// is what survives `execve` for a program without file capabilities run by a user other than
/// root (its permitted and effective sets after `execve` are the ambient set); root gets its
/// bounding set at `execve`, so a child that stays root has the rest dropped from it first (that
/// needs CAP_SETPCAP, which root has until then). Raising what the caller does not hold fails
/// with EPERM (from `capset` or the ambient raise), as the kernel decides.
///
/// # Safety
/// Called by the child between `clone` and `execve`: raw system calls on stack values only.
pub(super) unsafe fn set_capabilities(capabilities: Capabilities) -> Result<(), libc::c_int> {
    let errno = || {
        // SAFETY: errno is thread-local and always readable.
        unsafe { *libc::__errno_location() }
    };
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two CapData (version 3) for the calling thread (pid 0).
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(errno());
    }
    // Capabilities the kernel knows answer 0 or 1; the first unknown one, EINVAL.
    let mut bounding = 0u64;
    for cap in 0..64u32 {
        // SAFETY: PR_CAPBSET_READ only reads this thread's bounding set.
        match unsafe { prctl(libc::PR_CAPBSET_READ, cap.into(), 0) } {
            1 => bounding |= 1 << cap,
            0 => {}
            _ => break,
        }
    }
    let wanted = capabilities.resolve(permitted_set(&data), bounding);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let drops = capabilities.bounding_drops(bounding);
        for cap in (0..64u32).filter(|cap| drops & (1 << cap) != 0) {
            // SAFETY: PR_CAPBSET_DROP only changes this thread's bounding set.
            if unsafe { prctl(libc::PR_CAPBSET_DROP, cap.into(), 0) } != 0 {
                return Err(errno());
            }
        }
    }
    let data = cap_data(wanted);
    // SAFETY: capset reads the header and two CapData; pid 0 is the calling thread.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(errno());
    }
    for cap in (0..64u32).filter(|cap| wanted & (1 << cap) != 0) {
        let raise = libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong;
        // SAFETY: PR_CAP_AMBIENT only changes this thread's ambient set.
        if unsafe { prctl(libc::PR_CAP_AMBIENT, raise, cap.into()) } != 0 {
            return Err(errno());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capset_data_splits_each_set_in_halves() {
        // kill (5), net_bind_service (10), mac_admin (33), checkpoint_restore (40).
        let set = 1 << 5 | 1 << 10 | 1 << 33 | 1 << 40;
        let data = cap_data(set);
        let half = |bits| CapData {
            effective: bits,
            permitted: bits,
            inheritable: bits,
        };
        assert_eq!(data, [half(0x420), half(0x102)]);
        assert_eq!(permitted_set(&data), set);
        assert_eq!(cap_data(0), [CapData::default(); 2]);
        assert_eq!(permitted_set(&cap_data(u64::MAX)), u64::MAX);
    }
}
