//! How a process ended, decoded from the raw wait status once, here.

/// The end of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called `exit(code)`.
    Exited(i32),
    /// A signal ended it.
    Signaled { signal: i32, core_dumped: bool },
}

impl ExitStatus {
    /// Decodes a raw status as `wait4` returns it.
    pub fn from_raw(raw: i32) -> ExitStatus {
        if libc::WIFEXITED(raw) {
            ExitStatus::Exited(libc::WEXITSTATUS(raw))
        } else {
            ExitStatus::Signaled {
                signal: libc::WTERMSIG(raw),
                core_dumped: libc::WCOREDUMP(raw),
            }
        }
    }

    /// The raw wait status (what erlexec reports as `{exit_status, Raw}`).
    pub fn into_raw(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => (code & 0xff) << 8,
            ExitStatus::Signaled {
                signal,
                core_dumped,
            } => (signal & 0x7f) | if core_dumped { 0x80 } else { 0 },
        }
    }

    /// Exit code 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_raw_statuses() {
        let cases = [
            (0x0000, ExitStatus::Exited(0)),
            (0x0100, ExitStatus::Exited(1)),
            (0x0300, ExitStatus::Exited(3)),
            (0xff00, ExitStatus::Exited(255)),
            (
                0x0009,
                ExitStatus::Signaled {
                    signal: 9,
                    core_dumped: false,
                },
            ),
            (
                0x008b,
                ExitStatus::Signaled {
                    signal: 11,
                    core_dumped: true,
                },
            ),
            (
                0x000f,
                ExitStatus::Signaled {
                    signal: 15,
                    core_dumped: false,
                },
            ),
        ];
        for (raw, status) in cases {
            assert_eq!(ExitStatus::from_raw(raw), status, "{raw:#x}");
            assert_eq!(status.into_raw(), raw, "{status:?}");
        }
        assert!(ExitStatus::Exited(0).success());
        assert!(!ExitStatus::Exited(1).success());
    }
}
