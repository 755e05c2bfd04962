//! Reading a child's stdout and stderr: credit, caps, and exactly what the pipe holds.

use super::*;

/// How many bytes one read may take, at most `want`, so that a child with a `max_output` of
/// `max` never has more than `max` bytes delivered when `delivered` already were (0: the cap is
/// reached).
pub(crate) fn output_allowance(want: usize, max: Option<u64>, delivered: u64) -> usize {
    match max {
        None => want,
        Some(max) => {
            let left = max.saturating_sub(delivered);
            want.min(usize::try_from(left).unwrap_or(usize::MAX))
        }
    }
}

impl EventLoop {
    pub(super) fn on_readable(&mut self, id: u64, stream: Stream) {
        self.read_once(id, stream);
        self.finish_if_done(id);
    }

    /// One read from a stream, within its credit and, after the exit, within what is owed.
    /// Returns whether it read something.
    pub(super) fn read_once(&mut self, id: u64, stream: Stream) -> bool {
        let epoll = self.epoll.as_raw_fd();
        let Some(child) = self.children.get_mut(&id) else {
            return false;
        };
        let Some(index) = child.pipes.iter().position(|p| p.stream == stream) else {
            return false;
        };
        let pipe = &mut child.pipes[index];
        // Out of credit, nothing is read; but a pipe that owes nothing after the exit is done.
        if pipe.credit == Some(0) && pipe.owed != Some(0) {
            return false;
        }
        let fd = pipe.fd.as_raw_fd();
        let delivered = child.counters.stdout_bytes + child.counters.stderr_bytes;
        let allowance = output_allowance(self.buffer.len(), child.max_output, delivered);
        if allowance == 0 && pipe.owed != Some(0) {
            // At the cap: one more byte, never delivered, tells whether the child wrote more
            // than allowed (else this is the end of file).
            match sys::read(fd, &mut self.buffer[..1]) {
                Ok(1..) => {
                    self.cap_output(id);
                    return false;
                }
                Err(Errno::EAGAIN) => return false,
                _ => {
                    let pipe = child.pipes.swap_remove(index);
                    if pipe.watching {
                        epoll_remove(epoll, pipe.fd.as_raw_fd());
                    }
                    return false;
                }
            }
        }
        // Read exactly what the pipe holds (after the exit: what is owed), so that a listener
        // can read straight into a buffer of the right size.
        let available = pipe.owed.unwrap_or_else(|| sys::bytes_available(fd));
        let want = available.min(allowance);
        let mut read = |buffer: &mut [u8]| sys::read(fd, buffer);
        let result = if want > 0 {
            child
                .listener
                .read_output(stream, child.os_pid, want, &mut self.buffer, &mut read)
        } else if pipe.owed.is_some() {
            Ok(0)
        } else {
            // Nothing held: this read sees the end of file, or bytes that just arrived.
            let n = read(&mut self.buffer[..allowance]);
            if let Ok(n @ 1..) = n {
                child
                    .listener
                    .output(stream, child.os_pid, &self.buffer[..n]);
            }
            n
        };
        match result {
            Ok(n) if n > 0 => {
                pipe.owed = pipe.owed.map(|owed| owed - n);
                let passive = match &mut pipe.credit {
                    Some(credit) => {
                        *credit -= 1;
                        *credit == 0
                    }
                    None => false,
                };
                if passive && pipe.watching {
                    pipe.watching = false;
                    epoll_remove(epoll, fd);
                }
                if passive {
                    child.listener.passive(stream, child.os_pid);
                }
                self.count_output(id, stream, n);
                true
            }
            Err(Errno::EAGAIN) => false,
            _ => {
                // End of file (EIO for a pty whose other side closed), or all owed delivered.
                let pipe = child.pipes.swap_remove(index);
                if pipe.watching {
                    epoll_remove(epoll, pipe.fd.as_raw_fd());
                }
                false
            }
        }
    }

    /// Grants credit to flow-controlled streams of a child, and reads what is owed.
    pub(super) fn activate(&mut self, id: u64, stream: Option<Stream>, credit: Option<u64>) {
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        let mut rewatch = Vec::new();
        let exited = child.exit.is_some();
        for pipe in child
            .pipes
            .iter_mut()
            .filter(|p| stream.is_none_or(|s| s == p.stream))
        {
            pipe.credit = match (pipe.credit, credit) {
                (_, None) => None,
                (None, Some(_)) => pipe.credit,
                (Some(old), Some(more)) => Some(old.saturating_add(more)),
            };
            if pipe.credit != Some(0) && !pipe.watching {
                pipe.watching = true;
                let kind = match pipe.stream {
                    Stream::Stdout => Source::Stdout,
                    Stream::Stderr => Source::Stderr,
                };
                rewatch.push((pipe.fd.as_raw_fd(), kind));
            }
        }
        for (fd, kind) in rewatch {
            let _ = self.watch(fd, Token::Child(id, kind), libc::EPOLLIN);
        }
        if exited {
            // Nothing will wake us for bytes already in the pipe: deliver them now.
            for stream in [Stream::Stdout, Stream::Stderr] {
                while self.read_once(id, stream) {}
            }
        }
        self.finish_if_done(id);
    }

    pub(super) fn count_output(&mut self, id: u64, stream: Stream, n: usize) {
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        match stream {
            Stream::Stdout => child.counters.stdout_bytes += n as u64,
            Stream::Stderr => child.counters.stderr_bytes += n as u64,
        }
        child.last_output = Instant::now();
    }

    /// The child wrote more than its `max_output`: nothing more is read or delivered, and it is
    /// stopped (unless it has already exited).
    pub(super) fn cap_output(&mut self, id: u64) {
        let epoll = self.epoll.as_raw_fd();
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        child.counters.output_capped = true;
        for pipe in std::mem::take(&mut child.pipes) {
            if pipe.watching {
                epoll_remove(epoll, pipe.fd.as_raw_fd());
            }
            child.muted.push(pipe.fd);
        }
        if child.exit.is_none() {
            self.begin_stop(id, false, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::output_allowance;

    #[test]
    pub(super) fn output_allowance_never_lets_more_than_the_cap_through() {
        assert_eq!(output_allowance(1 << 20, None, u64::MAX), 1 << 20);
        assert_eq!(output_allowance(1 << 20, Some(1_000_000), 0), 1_000_000);
        assert_eq!(output_allowance(65536, Some(1_000_000), 983_040), 16_960);
        assert_eq!(output_allowance(65536, Some(1_000_000), 999_999), 1);
        assert_eq!(output_allowance(65536, Some(1_000_000), 1_000_000), 0);
        assert_eq!(output_allowance(65536, Some(5), 7), 0);
        assert_eq!(output_allowance(65536, Some(u64::MAX), 0), 65536);
        // Reads of any size, summed, stop exactly at the cap.
        let (mut delivered, max) = (0u64, 1_000_001u64);
        for want in [4096, 1 << 20, 7, 65536].into_iter().cycle().take(100) {
            delivered += output_allowance(want, Some(max), delivered) as u64;
        }
        assert_eq!(delivered, max);
    }
}
