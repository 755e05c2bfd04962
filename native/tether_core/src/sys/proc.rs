//! What `/proc` says of a process: its state, parent and group, and the live members of a group.

/// The members of group `pgid` that are not zombies (a zombie is as good as gone, and orphaned
/// zombies may wait seconds for init to reap them). Scans `/proc`: for draining groups only,
/// never on a hot path.
pub fn group_live_members(pgid: i32) -> Vec<libc::pid_t> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|&pid| {
            proc_stat_fields(pid).is_some_and(|(state, _, group)| group == pgid && state != b'Z')
        })
        .collect()
}

/// The state letter, parent pid and process group of `/proc/<pid>/stat`.
pub fn proc_stat_fields(pid: libc::pid_t) -> Option<(u8, libc::pid_t, libc::pid_t)> {
    parse_stat(&std::fs::read(format!("/proc/{pid}/stat")).ok()?)
}

/// The state letter, parent pid and process group of the text of a `/proc/<pid>/stat`.
fn parse_stat(stat: &[u8]) -> Option<(u8, libc::pid_t, libc::pid_t)> {
    // The command name may contain spaces and parentheses: the fields follow the last ')'.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 2..)?).ok()?;
    let mut fields = rest.split(' ');
    let state = fields.next()?.bytes().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

/// The job-control state letter of `/proc/<pid>/stat` (`R`, `S`, `T`, `Z`, …).
pub fn proc_state(pid: libc::pid_t) -> Option<u8> {
    proc_stat_fields(pid).map(|(state, _, _)| state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_follow_the_last_parenthesis() {
        assert_eq!(
            parse_stat(b"42 (sleep) S 7 42 42 0 -1"),
            Some((b'S', 7, 42))
        );
        // A command name may hold spaces and parentheses of its own.
        assert_eq!(parse_stat(b"9 (a) b) (c) T 1 5 5 0"), Some((b'T', 1, 5)));
        assert_eq!(parse_stat(b"9 (x) Z"), None);
        assert_eq!(parse_stat(b"garbage"), None);
    }

    #[test]
    fn our_own_process_is_read_from_proc() {
        // SAFETY: getpid, getppid and getpgrp have no preconditions.
        let (pid, parent, group) = unsafe { (libc::getpid(), libc::getppid(), libc::getpgrp()) };
        let (state, ppid, pgrp) = proc_stat_fields(pid).unwrap();
        assert_eq!((ppid, pgrp), (parent, group));
        assert_eq!(proc_state(pid), Some(state));
        assert!(group_live_members(group).contains(&pid));
        assert_eq!(proc_stat_fields(-5), None);
    }
}
