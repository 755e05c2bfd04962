//! tether_spawner: clones children for the reactor of the VM that started it.
//!
//! Started by the reactor thread with one end of a `SOCK_SEQPACKET` pair on stdin and sharing
//! the VM's working directory and umask (`CLONE_FS`). Each request carries a prepared child
//! (see `tether_core::spawner`); the child is cloned with `CLONE_PARENT`, so it is the VM's
//! child, and its pidfd goes back with the answer. It exits when the VM's end closes.
//!
//! It stays small on purpose: a few descriptors (a clone copies the fd table) and little memory
//! (the kernel folds the cloning process's peak RSS into the child's `max_rss` at `execve`).

fn main() {
    std::process::exit(tether_core::spawner::serve(0));
}
