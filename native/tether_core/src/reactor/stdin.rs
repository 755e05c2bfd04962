//! Writing a child's stdin without ever blocking.

use super::*;

impl EventLoop {
    /// Writes what the child's stdin takes; waits for writability when it takes no more.
    pub(super) fn flush_stdin(&mut self, id: u64) {
        let Some(child) = self.children.get_mut(&id) else {
            return;
        };
        let Some(stdin) = child.stdin.as_mut() else {
            return;
        };
        let fd = stdin.fd.as_raw_fd();
        let mut broken = false;
        while let Some(front) = stdin.queue.front() {
            let bytes = (**front).as_ref();
            match sys::write(fd, &bytes[stdin.offset..]) {
                Ok(n) => {
                    child.counters.stdin_bytes += n as u64;
                    stdin.offset += n;
                    if stdin.offset == bytes.len() {
                        stdin.queue.pop_front();
                        stdin.offset = 0;
                        self.shared.registry.stdin_dequeued(child.os_pid);
                    }
                }
                Err(Errno::EAGAIN) => break,
                Err(_) => {
                    // EPIPE: the child closed its stdin; nothing more can be written.
                    broken = true;
                    break;
                }
            }
        }
        if !broken {
            stdin.notify_if_flushed();
        }
        let done = broken || (stdin.eof && stdin.queue.is_empty());
        if done {
            self.shared.registry.stdin_closing(child.os_pid);
            if let Some(stdin) = child.stdin.take() {
                if stdin.watching {
                    self.unwatch(stdin.fd.as_raw_fd());
                }
            }
            return;
        }
        let wants_writable = !stdin.queue.is_empty();
        if wants_writable != stdin.watching {
            stdin.watching = wants_writable;
            if wants_writable {
                let _ = self.watch(fd, Token::Child(id, Source::Stdin), libc::EPOLLOUT);
            } else {
                self.unwatch(fd);
            }
        }
    }

    // ── Exits ────────────────────────────────────────────────────────────────────────────────
}
