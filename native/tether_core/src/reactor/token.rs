//! What an epoll event is about, packed into the event's 64-bit data.

/// One source of events in the loop's epoll set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Token {
    /// A request is queued (the eventfd).
    Wake,
    /// The watchdog exited (its pidfd).
    WatchdogExit,
    /// The watchdog's socket takes more records.
    WatchdogStdin,
    /// The spawner exited (its pidfd).
    SpawnerExit,
    /// An event of child `id` (ids start at 1).
    Child(u64, Source),
}

/// Which of a child's descriptors an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// Its pidfd: it exited.
    Exit,
    Stdout,
    Stderr,
    /// Its stdin pipe takes more bytes.
    Stdin,
    /// Its `cgroup.events` changed (a draining child's leftovers).
    Cgroup,
}

pub(super) const SOURCE_BITS: u32 = 3;
pub(super) const SOURCE_MASK: u64 = (1 << SOURCE_BITS) - 1;

impl Source {
    const ALL: [Source; 5] = [
        Source::Exit,
        Source::Stdout,
        Source::Stderr,
        Source::Stdin,
        Source::Cgroup,
    ];
}

impl Token {
    /// The event data: `id << 3 | source` for a child, below 8 (id 0) for the loop's own.
    pub(super) fn encode(self) -> u64 {
        match self {
            Token::Wake => 0,
            Token::WatchdogExit => 1,
            Token::WatchdogStdin => 2,
            Token::SpawnerExit => 3,
            Token::Child(id, source) => (id << SOURCE_BITS) | source as u64,
        }
    }

    pub(super) fn decode(data: u64) -> Token {
        match (data >> SOURCE_BITS, data & SOURCE_MASK) {
            (0, 0) => Token::Wake,
            (0, 1) => Token::WatchdogExit,
            (0, 2) => Token::WatchdogStdin,
            (0, _) => Token::SpawnerExit,
            (id, source) => {
                let source = Source::ALL
                    .get(source as usize)
                    .copied()
                    .unwrap_or(Source::Cgroup);
                Token::Child(id, source)
            }
        }
    }

    /// The child an event concerns (0: none).
    pub(super) fn child_id(self) -> u64 {
        match self {
            Token::Child(id, _) => id,
            _ => 0,
        }
    }

    /// Pipe traffic, after which the loop polls a little before it sleeps.
    pub(super) fn is_pipe(self) -> bool {
        matches!(
            self,
            Token::Child(_, Source::Stdout | Source::Stderr | Source::Stdin)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn every_token_survives_the_round_trip() {
        let mut tokens = vec![
            Token::Wake,
            Token::WatchdogExit,
            Token::WatchdogStdin,
            Token::SpawnerExit,
        ];
        for id in [1, 2, 7, 8, 1 << 40, u64::MAX >> SOURCE_BITS] {
            tokens.extend(Source::ALL.iter().map(|&s| Token::Child(id, s)));
        }
        for token in tokens {
            assert_eq!(Token::decode(token.encode()), token, "{token:?}");
        }
        assert_eq!(Token::Child(5, Source::Exit).child_id(), 5);
        assert!(Token::Child(5, Source::Stdin).is_pipe());
        assert!(!Token::Child(5, Source::Exit).is_pipe() && !Token::Wake.is_pipe());
    }
}
