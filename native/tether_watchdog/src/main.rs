//! tether_watchdog: the last line of defence against orphans.
//!
//! The reactor of a VM running Tether starts this program with a pipe on its stdin and tells it,
//! one line each, which process groups to guard (`+PGID`) and which are gone (`-PGID`). When the
//! VM dies — however it dies, SIGKILL included — the kernel closes the pipe's write end, `read`
//! returns end of file, and this program SIGKILLs every group it still guards, then exits.
//!
//! It runs in its own process group and without `PR_SET_PDEATHSIG`, so it outlives the VM for
//! that moment. The reactor removes a group (`-PGID`) while the group leader is still an unreaped
//! zombie, and lines are read in order, so a group id that could have been recycled is never
//! signalled.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};

/// Applies one protocol line to the guarded set. Malformed lines are ignored.
fn apply(line: &[u8], groups: &mut BTreeSet<i32>) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    let (op, number) = text.split_at(text.len().min(1));
    let Ok(pgid) = number.parse::<i32>() else {
        return;
    };
    // Never 0 or 1: kill(0) is our own group, kill(-1) is every process.
    if pgid <= 1 {
        return;
    }
    match op {
        "+" => {
            groups.insert(pgid);
        }
        "-" => {
            groups.remove(&pgid);
        }
        _ => {}
    }
}

fn kill_all(groups: &BTreeSet<i32>) {
    for &pgid in groups {
        // SAFETY: kill(2) with a negative pid (a group) has no memory effects.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

fn main() {
    // A terminal's SIGINT or SIGHUP must not end the guard before the VM is gone.
    // SAFETY: setting a signal disposition to SIG_IGN has no memory effects.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let mut groups = BTreeSet::new();
    let mut stdin = BufReader::new(std::io::stdin().lock());
    let mut line = Vec::new();
    loop {
        line.clear();
        match stdin.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => apply(&line, &mut groups),
        }
    }
    kill_all(&groups);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_lines() {
        let mut groups = BTreeSet::new();
        for line in [
            "+100\n", "+200", "-100\n", "+1", "+0", "+-5", "x300", "+abc", "", "-",
        ] {
            apply(line.as_bytes(), &mut groups);
        }
        assert_eq!(groups.into_iter().collect::<Vec<_>>(), vec![200]);
    }
}
