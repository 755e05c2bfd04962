//! Signal names and numbers.
//!
//! Names are the lower-case `sig…` spellings used as Elixir atoms (`:sigterm`). Real-time signals
//! have no name here and are addressed by number.

/// Every named Linux signal, by number.
const TABLE: &[(i32, &str)] = &[
    (libc::SIGHUP, "sighup"),
    (libc::SIGINT, "sigint"),
    (libc::SIGQUIT, "sigquit"),
    (libc::SIGILL, "sigill"),
    (libc::SIGTRAP, "sigtrap"),
    (libc::SIGABRT, "sigabrt"),
    (libc::SIGBUS, "sigbus"),
    (libc::SIGFPE, "sigfpe"),
    (libc::SIGKILL, "sigkill"),
    (libc::SIGUSR1, "sigusr1"),
    (libc::SIGSEGV, "sigsegv"),
    (libc::SIGUSR2, "sigusr2"),
    (libc::SIGPIPE, "sigpipe"),
    (libc::SIGALRM, "sigalrm"),
    (libc::SIGTERM, "sigterm"),
    (libc::SIGSTKFLT, "sigstkflt"),
    (libc::SIGCHLD, "sigchld"),
    (libc::SIGCONT, "sigcont"),
    (libc::SIGSTOP, "sigstop"),
    (libc::SIGTSTP, "sigtstp"),
    (libc::SIGTTIN, "sigttin"),
    (libc::SIGTTOU, "sigttou"),
    (libc::SIGURG, "sigurg"),
    (libc::SIGXCPU, "sigxcpu"),
    (libc::SIGXFSZ, "sigxfsz"),
    (libc::SIGVTALRM, "sigvtalrm"),
    (libc::SIGPROF, "sigprof"),
    (libc::SIGWINCH, "sigwinch"),
    (libc::SIGIO, "sigio"),
    (libc::SIGPWR, "sigpwr"),
    (libc::SIGSYS, "sigsys"),
];

/// The highest signal number the kernel accepts (`SIGRTMAX` on Linux).
pub const MAX: i32 = 64;

/// The number of the signal called `name` (`"sigterm"`, case-insensitive; `"term"` also works).
pub fn number(name: &str) -> Option<i32> {
    let lower = name.to_ascii_lowercase();
    let wanted = if lower.starts_with("sig") {
        lower
    } else {
        format!("sig{lower}")
    };
    TABLE
        .iter()
        .find(|(_, n)| *n == wanted)
        .map(|(signum, _)| *signum)
}

/// The name of signal `signum`, or `None` for real-time and unknown numbers.
pub fn name(signum: i32) -> Option<&'static str> {
    TABLE.iter().find(|(s, _)| *s == signum).map(|(_, n)| *n)
}

/// Whether `signum` can be sent: 0 (a probe) up to [`MAX`].
pub fn is_valid(signum: i32) -> bool {
    (0..=MAX).contains(&signum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_round_trip() {
        for (signum, n) in TABLE {
            assert_eq!(number(n), Some(*signum));
            assert_eq!(name(*signum), Some(*n));
        }
    }

    #[test]
    fn table_of_known_values() {
        let cases = [
            ("sigkill", Some(9)),
            ("SIGTERM", Some(15)),
            ("term", Some(15)),
            ("sighup", Some(1)),
            ("sigusr1", Some(10)),
            ("sigfoo", None),
            ("", None),
        ];
        for (n, expected) in cases {
            assert_eq!(number(n), expected, "{n}");
        }
        assert_eq!(name(34), None);
        assert!(is_valid(0) && is_valid(64) && !is_valid(65) && !is_valid(-1));
    }
}
