//! The event loop with real processes and a listener that records events.

use crossbeam_channel::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tether_core::command::kill_after;
use tether_core::{
    Command, EnvChange, ExitStatus, Input, Listener, Output, Pty, Reactor, Rlimit, SpawnError,
    State, StopAction, StopStep, Stream, Usage,
};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Spawned(Result<u32, SpawnError>),
    Output(Stream, Vec<u8>),
    Passive(Stream),
    Exited(Option<ExitStatus>, Option<Usage>, tether_core::Counters),
}

struct Recorder(Sender<Event>);

impl Listener for Recorder {
    fn spawned(&mut self, result: Result<u32, SpawnError>) {
        let _ = self.0.send(Event::Spawned(result));
    }
    fn output(&mut self, stream: Stream, _os_pid: u32, data: &[u8]) {
        let _ = self.0.send(Event::Output(stream, data.to_vec()));
    }
    fn passive(&mut self, stream: Stream, _os_pid: u32) {
        let _ = self.0.send(Event::Passive(stream));
    }
    fn exited(
        &mut self,
        _os_pid: u32,
        status: Option<ExitStatus>,
        usage: Option<Usage>,
        counters: tether_core::Counters,
    ) {
        let _ = self.0.send(Event::Exited(status, usage, counters));
    }
}

fn reactor() -> &'static Reactor {
    static REACTOR: std::sync::OnceLock<Reactor> = std::sync::OnceLock::new();
    REACTOR.get_or_init(|| Reactor::start(Default::default()).expect("reactor starts"))
}

const WAIT: Duration = Duration::from_secs(20);

fn start(command: Command) -> (Result<u32, SpawnError>, Receiver<Event>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    reactor().spawn(command, Box::new(Recorder(tx)), Arc::new(()));
    match rx.recv_timeout(WAIT).expect("spawn reply") {
        Event::Spawned(result) => (result, rx),
        other => panic!("expected Spawned first, got {other:?}"),
    }
}

fn sh(script: &str) -> Command {
    let mut command = Command::new(["/bin/sh", "-c", script]);
    command.stdout = Output::Pipe;
    command.stderr = Output::Pipe;
    command
}

/// Collects output until the exit event: (stdout, stderr, status).
fn finish(rx: &Receiver<Event>) -> (Vec<u8>, Vec<u8>, Option<ExitStatus>) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    loop {
        match rx.recv_timeout(WAIT).expect("event") {
            Event::Output(Stream::Stdout, data) => out.extend(data),
            Event::Output(Stream::Stderr, data) => err.extend(data),
            Event::Exited(status, _, _) => return (out, err, status),
            Event::Passive(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Whether `pid` is gone (or a zombie waiting for init) within two seconds.
fn gone(pid: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat) if stat.rsplit(')').next().unwrap_or("").starts_with(" Z") => return true,
            Ok(_) if Instant::now() > deadline => return false,
            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn run(command: Command) -> (Vec<u8>, Vec<u8>, Option<ExitStatus>) {
    let (result, rx) = start(command);
    result.expect("spawned");
    finish(&rx)
}

#[test]
fn exit_codes_are_exact() {
    for code in [0, 1, 3, 255] {
        let (_, _, status) = run(sh(&format!("exit {code}")));
        assert_eq!(status, Some(ExitStatus::Exited(code)));
    }
}

#[test]
fn signals_are_exact() {
    let (_, _, status) = run(sh("kill -9 $$"));
    assert_eq!(
        status,
        Some(ExitStatus::Signaled {
            signal: 9,
            core_dumped: false
        })
    );
}

#[test]
fn output_arrives_whole_and_before_the_exit() {
    let (out, err, status) = run(sh("seq 1 200000; echo oops >&2"));
    let expected: String = (1..=200000).map(|i| format!("{i}\n")).collect();
    assert_eq!(out, expected.into_bytes());
    assert_eq!(err, b"oops\n");
    assert_eq!(status, Some(ExitStatus::Exited(0)));
}

#[test]
fn exec_errors_are_reported_at_spawn() {
    let (result, _) = start(Command::new(["/nonexistent/program"]));
    assert_eq!(result, Err(SpawnError::Os(nix::errno::Errno::ENOENT)));
    let (result, _) = start(Command::new(["no-such-program-anywhere"]));
    assert_eq!(result, Err(SpawnError::Os(nix::errno::Errno::ENOENT)));
    let not_executable = std::env::temp_dir().join(format!("tether-noexec-{}", std::process::id()));
    std::fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    let (result, _) = start(Command::new([not_executable.to_str().unwrap()]));
    std::fs::remove_file(&not_executable).unwrap();
    assert_eq!(result, Err(SpawnError::Os(nix::errno::Errno::EACCES)));
    let mut in_missing_dir = Command::new(["true"]);
    in_missing_dir.cwd = Some(b"/nonexistent-dir".to_vec());
    let (result, _) = start(in_missing_dir);
    assert_eq!(result, Err(SpawnError::Os(nix::errno::Errno::ENOENT)));
}

#[test]
fn cwd_and_env_are_applied() {
    let mut command = sh("pwd; echo \"$A-$HOME\"");
    command.cwd = Some(b"/tmp".to_vec());
    command.env = vec![
        EnvChange::Set(b"A".to_vec(), b"x".to_vec()),
        EnvChange::Unset(b"HOME".to_vec()),
    ];
    let (out, _, _) = run(command);
    assert_eq!(out, b"/tmp\nx-\n");
}

#[test]
fn children_start_clean() {
    // Only fds 0-2, no ignored or blocked signal, own process group.
    let script = "ls /proc/self/fd | sort -n | tr '\\n' ' '; echo; \
                  grep -E '^(SigIgn|SigBlk)' /proc/self/status; \
                  ps -o pgid= -p $$ | tr -d ' '; echo $$";
    let (out, _, _) = run(sh(script));
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // `ls` itself opens one descriptor for the directory it lists.
    assert_eq!(lines[0], "0 1 2 3 ");
    assert_eq!(lines[1], "SigBlk:\t0000000000000000");
    assert_eq!(lines[2], "SigIgn:\t0000000000000000");
    assert_eq!(lines[3], lines[4], "the child leads its own group");
}

#[test]
fn exit_is_reported_while_a_grandchild_holds_stdout() {
    let started = Instant::now();
    let (out, _, status) = run(sh("sleep 3 & echo started"));
    assert_eq!(out, b"started\n");
    assert_eq!(status, Some(ExitStatus::Exited(0)));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn stop_terms_then_kills_the_group_after_the_timeout() {
    let mut command = sh("trap '' TERM; sleep 100 & echo $!; wait");
    command.stop = kill_after(Duration::from_millis(300));
    let (result, rx) = start(command);
    let os_pid = result.unwrap();
    let grandchild = match rx.recv_timeout(WAIT).unwrap() {
        Event::Output(Stream::Stdout, data) => String::from_utf8(data).unwrap(),
        other => panic!("{other:?}"),
    };
    let grandchild = grandchild.trim();
    assert_eq!(reactor().registry().state(os_pid), Ok(State::Running));
    let started = Instant::now();
    reactor().stop_os_pid(os_pid).unwrap();
    assert_eq!(reactor().registry().state(os_pid), Ok(State::Stopping));
    let (_, _, status) = finish(&rx);
    // The shell ignores TERM; the grandchild `sleep` dies of it, so the shell waits on… SIGKILL.
    assert_eq!(
        status,
        Some(ExitStatus::Signaled {
            signal: 9,
            core_dumped: false
        })
    );
    assert!(started.elapsed() >= Duration::from_millis(290));
    assert!(
        gone(grandchild),
        "grandchild {grandchild} survived the stop"
    );
    assert_eq!(
        reactor().kill(os_pid, 9),
        Err(tether_core::KillError::NoProcess)
    );
    // stop/1 still reaches what the child left behind until that is gone (a dying grandchild
    // may keep it for a moment), then there is nothing left to stop.
    let deadline = Instant::now() + WAIT;
    while reactor().stop_os_pid(os_pid) != Err(tether_core::NoProcess) {
        assert!(
            Instant::now() < deadline,
            "the drain of {os_pid} never ended"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn kill_reaches_the_group_and_status_sees_job_control() {
    // Not through `sh -c`: dash vforks, and a leader waiting on a stopped vfork child is in D.
    let (result, rx) = start(Command::new(["sleep", "100"]));
    let os_pid = result.unwrap();
    reactor().kill(os_pid, libc::SIGSTOP).unwrap();
    let deadline = Instant::now() + WAIT;
    while reactor().registry().state(os_pid) != Ok(State::Stopped) {
        assert!(Instant::now() < deadline, "never seen stopped");
        std::thread::sleep(Duration::from_millis(5));
    }
    reactor().kill(os_pid, libc::SIGKILL).unwrap();
    let (_, _, status) = finish(&rx);
    assert_eq!(
        status,
        Some(ExitStatus::Signaled {
            signal: 9,
            core_dumped: false
        })
    );
}

#[test]
fn large_output_counts_exactly() {
    let (out, _, status) = run(sh("head -c 100000000 /dev/zero"));
    assert_eq!(out.len(), 100_000_000);
    assert_eq!(status, Some(ExitStatus::Exited(0)));
}

#[test]
fn stdin_is_written_in_order_and_closed_after_the_queue() {
    let mut command = Command::new(["cat"]);
    command.stdin = Input::Pipe;
    command.stdout = Output::Pipe;
    let (result, rx) = start(command);
    let os_pid = result.unwrap();
    let mut expected = Vec::new();
    // Small chunks go straight to the pipe when nothing is queued, the others through the
    // loop's queue: sizes on both sides of that limit and of the pipe's capacity.
    let sizes = [1, 64 * 1024, 64 * 1024 + 1, 7, 300_000, 100];
    for i in 0..200u32 {
        let chunk = vec![(i % 251) as u8; sizes[i as usize % sizes.len()]];
        expected.extend_from_slice(&chunk);
        reactor().write(os_pid, Box::new(chunk)).unwrap();
    }
    reactor().close_stdin(os_pid).unwrap();
    assert_eq!(
        reactor().write(os_pid, Box::new(vec![1])),
        Err(tether_core::WriteError::Closed)
    );
    let (out, _, status) = finish(&rx);
    assert_eq!(out.len(), expected.len());
    assert!(out == expected, "stdin arrived out of order");
    assert_eq!(status, Some(ExitStatus::Exited(0)));
}

#[test]
fn stderr_into_stdout_keeps_the_interleaving() {
    let mut command = sh("echo 1; echo 2 >&2; echo 3; echo 4 >&2");
    command.stderr = Output::Other;
    let (out, err, _) = run(command);
    assert_eq!(out, b"1\n2\n3\n4\n");
    assert!(err.is_empty());
}

#[test]
fn output_to_files_and_closed_streams() {
    let dir = std::env::temp_dir().join(format!("tether-core-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("out.txt");
    std::fs::write(&file, "old\n").unwrap();
    let path = file.to_str().unwrap().as_bytes().to_vec();
    let mut command = sh("echo new");
    command.stdout = Output::File {
        path: path.clone(),
        append: true,
        mode: 0o600,
    };
    run(command);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "old\nnew\n");
    let mut command = sh("echo again");
    command.stdout = Output::File {
        path,
        append: false,
        mode: 0o600,
    };
    run(command);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "again\n");
    // A closed stdout: the write fails, the shell says so on stderr.
    let mut command = sh("echo x || echo closed >&2");
    command.stdout = Output::Close;
    let (_, err, _) = run(command);
    assert!(String::from_utf8_lossy(&err).contains("closed"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_pty_is_a_terminal_with_the_asked_size() {
    let mut command = sh("test -t 0 && test -t 1 && stty size");
    command.pty = Some(Pty {
        rows: 33,
        cols: 101,
        echo: false,
    });
    command.stdin = Input::Pipe;
    command.stderr = Output::Pipe;
    let (out, _, status) = run(command);
    assert_eq!(String::from_utf8_lossy(&out).trim(), "33 101");
    assert_eq!(status, Some(ExitStatus::Exited(0)));
}

#[test]
fn a_stop_sequence_runs_its_steps_in_order() {
    let mut command =
        sh("trap 'echo got INT' INT; trap '' TERM; echo ready; while :; do sleep 0.05; done");
    command.stop = vec![
        StopStep {
            action: StopAction::Signal(libc::SIGINT),
            wait: Duration::from_millis(300),
        },
        StopStep {
            action: StopAction::Signal(libc::SIGTERM),
            wait: Duration::from_millis(300),
        },
    ];
    let (result, rx) = start(command);
    let os_pid = result.unwrap();
    assert!(matches!(rx.recv_timeout(WAIT).unwrap(), Event::Output(_, d) if d == b"ready\n"));
    let started = Instant::now();
    reactor().stop_os_pid(os_pid).unwrap();
    let (out, _, status) = finish(&rx);
    assert!(String::from_utf8_lossy(&out).contains("got INT"));
    assert_eq!(
        status,
        Some(ExitStatus::Signaled {
            signal: 9,
            core_dumped: false
        })
    );
    assert!(started.elapsed() >= Duration::from_millis(590));
}

#[test]
fn a_kill_command_gets_the_child_pid() {
    let mut command = sh("echo ready; sleep 100");
    command.stop = vec![StopStep {
        action: StopAction::Command(b"kill -USR1 $CHILD_PID".to_vec()),
        wait: Duration::from_secs(5),
    }];
    command.kill_group = false;
    let (result, rx) = start(command);
    let os_pid = result.unwrap();
    assert!(matches!(rx.recv_timeout(WAIT).unwrap(), Event::Output(_, d) if d == b"ready\n"));
    reactor().stop_os_pid(os_pid).unwrap();
    let (_, _, status) = finish(&rx);
    assert_eq!(
        status,
        Some(ExitStatus::Signaled {
            signal: libc::SIGUSR1,
            core_dumped: false
        })
    );
}

#[test]
fn idle_timeout_and_max_output_stop_the_child() {
    let mut command = sh("echo hi; sleep 100");
    command.idle_timeout = Some(Duration::from_millis(200));
    let started = Instant::now();
    let (out, _, status) = run(command);
    assert_eq!(out, b"hi\n");
    assert_eq!(
        status,
        Some(ExitStatus::Signaled {
            signal: 15,
            core_dumped: false
        })
    );
    assert!(started.elapsed() >= Duration::from_millis(190));
}

/// Output until the exit event, and the exit's status and counters.
fn finish_counted(
    rx: &Receiver<Event>,
) -> (Vec<u8>, Vec<u8>, Option<ExitStatus>, tether_core::Counters) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    loop {
        match rx.recv_timeout(WAIT).expect("event") {
            Event::Output(Stream::Stdout, data) => out.extend(data),
            Event::Output(Stream::Stderr, data) => err.extend(data),
            Event::Exited(status, _, counters) => return (out, err, status, counters),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn max_output_delivers_exactly_its_bytes_then_stops_the_child() {
    let sigterm = Some(ExitStatus::Signaled {
        signal: 15,
        core_dumped: false,
    });
    // An odd cap, on both streams at once.
    let mut command = sh("yes | tee /dev/stderr");
    command.max_output = Some((1 << 20) + 1);
    let (result, rx) = start(command);
    result.unwrap();
    let (out, err, status, counters) = finish_counted(&rx);
    assert_eq!(out.len() + err.len(), (1 << 20) + 1);
    assert_eq!(status, sigterm);
    assert_eq!(
        (counters.stdout_bytes, counters.stderr_bytes),
        (out.len() as u64, err.len() as u64)
    );
    assert!(counters.output_capped);

    // A cap smaller than one read.
    let mut command = Command::new(["yes"]);
    command.stdout = Output::Pipe;
    command.max_output = Some(5);
    let (result, rx) = start(command);
    result.unwrap();
    let (out, _, status, counters) = finish_counted(&rx);
    assert_eq!(out, b"y\ny\ny");
    assert_eq!(status, sigterm);
    assert!(counters.output_capped);

    // Exactly the cap, then an exit of its own: not capped, not stopped.
    let mut command = sh("printf 12345");
    command.max_output = Some(5);
    let (result, rx) = start(command);
    result.unwrap();
    let (out, _, status, counters) = finish_counted(&rx);
    assert_eq!(out, b"12345");
    assert_eq!(status, Some(ExitStatus::Exited(0)));
    assert!(!counters.output_capped);

    // More than the cap, and gone before it is read: capped, with its own exit status.
    let mut command = sh("printf 1234567; exit 3");
    command.max_output = Some(5);
    command.stdout_credit = Some(0);
    let (result, rx) = start(command);
    let os_pid = result.unwrap();
    assert!(gone(&os_pid.to_string()));
    reactor().activate(os_pid, None, None).unwrap();
    let (out, _, status, counters) = finish_counted(&rx);
    assert_eq!(out, b"12345");
    assert_eq!(status, Some(ExitStatus::Exited(3)));
    assert!(counters.output_capped);
}

#[test]
fn rlimits_and_nice_apply() {
    let mut command = sh("ulimit -n; nice");
    command.rlimits = vec![Rlimit {
        resource: libc::RLIMIT_NOFILE as i32,
        soft: 77,
        hard: 77,
    }];
    command.nice = Some(7);
    let (out, _, _) = run(command);
    assert_eq!(out, b"77\n7\n");
}

#[test]
fn usage_is_reported() {
    let (tx, rx) = crossbeam_channel::unbounded();
    reactor().spawn(
        Command::new([
            "sh",
            "-c",
            "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done",
        ]),
        Box::new(Recorder(tx)),
        Arc::new(()),
    );
    let usage = loop {
        if let Event::Exited(_, usage, _) = rx.recv_timeout(WAIT).unwrap() {
            break usage.unwrap();
        }
    };
    assert!(
        usage.user_time + usage.system_time > Duration::from_millis(10),
        "{usage:?}"
    );
    assert!(usage.max_rss > 0);
}

#[test]
fn flow_control_holds_output_and_the_exit_until_credit_comes() {
    let mut command = Command::new(["head", "-c", "10000000", "/dev/zero"]);
    command.stdout = Output::Pipe;
    command.stdout_credit = Some(1);
    let (result, rx) = start(command);
    let os_pid = result.unwrap();
    let first = match rx.recv_timeout(WAIT).unwrap() {
        Event::Output(Stream::Stdout, data) => data.len(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        rx.recv_timeout(WAIT).unwrap(),
        Event::Passive(Stream::Stdout)
    );
    // Passive: nothing more is read, the producer blocks, no exit is reported (10 MB: more
    // than three reads can take, so the producer is still running).
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    reactor()
        .activate(os_pid, Some(Stream::Stdout), Some(2))
        .unwrap();
    let mut total = first;
    for _ in 0..2 {
        match rx.recv_timeout(WAIT).unwrap() {
            Event::Output(_, data) => total += data.len(),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        rx.recv_timeout(WAIT).unwrap(),
        Event::Passive(Stream::Stdout)
    );
    reactor().activate(os_pid, None, None).unwrap();
    let (rest, _, status) = finish(&rx);
    assert_eq!(total + rest.len(), 10_000_000);
    assert_eq!(status, Some(ExitStatus::Exited(0)));
}

#[test]
fn stdin_flushed_is_told_when_the_queue_is_written_or_never_will_be() {
    let flushed = |os_pid| {
        let (tx, rx) = crossbeam_channel::bounded(1);
        reactor()
            .when_stdin_flushed(
                os_pid,
                Box::new(move |written| {
                    let _ = tx.send(written);
                }),
            )
            .unwrap();
        rx
    };
    // Starts `argv` with 8 MiB queued for its stdin.
    let fed = |argv: &[&str]| {
        let mut command = Command::new(argv.iter().copied());
        command.stdin = Input::Pipe;
        let (result, rx) = start(command);
        let os_pid = result.unwrap();
        reactor()
            .write(os_pid, Box::new(vec![7u8; 8 << 20]))
            .unwrap();
        (os_pid, rx)
    };
    // cat reads everything: the queue drains.
    let (os_pid, rx) = fed(&["cat"]);
    assert_eq!(flushed(os_pid).recv_timeout(WAIT), Ok(true));
    reactor().close_stdin(os_pid).unwrap();
    finish(&rx);

    // sleep reads nothing and exits: what is queued is never written.
    let (os_pid, rx) = fed(&["sleep", "0.2"]);
    assert_eq!(flushed(os_pid).recv_timeout(WAIT), Ok(false));
    finish(&rx);
}

/// A fresh path under /tmp (world-writable, so that any user may create it there).
fn tmp_path(tag: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::path::PathBuf::from(format!("/tmp/tether-core-{tag}-{}-{n}", std::process::id()))
}

fn output_file(path: &std::path::Path, append: bool) -> Output {
    Output::File {
        path: path.as_os_str().as_encoded_bytes().to_vec(),
        append,
        mode: 0o640,
    }
}

#[test]
fn the_child_opens_its_files_and_reports_their_errors() {
    let mut command = Command::new(["true"]);
    command.stdin = Input::File(b"/no/such/file".to_vec());
    assert_eq!(
        start(command).0,
        Err(SpawnError::Os(tether_core::Errno::ENOENT))
    );
    let mut command = Command::new(["true"]);
    command.stdout = output_file(std::path::Path::new("/no/such/dir/file"), false);
    assert_eq!(
        start(command).0,
        Err(SpawnError::Os(tether_core::Errno::ENOENT))
    );

    // Fd 0 closed: the file opens as 0, then moves to 1, and 0 stays closed.
    let path = tmp_path("closed-stdin");
    let mut command = sh("for fd in 0 1 2 3; do [ -e /proc/$$/fd/$fd ] && echo $fd; done; true");
    command.stdin = Input::Close;
    command.stdout = output_file(&path, false);
    command.stderr = Output::Other;
    let (result, rx) = start(command);
    result.unwrap();
    assert_eq!(finish(&rx).2, Some(ExitStatus::Exited(0)));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n2\n");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_users_files_are_opened_with_its_rights() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let mut command = Command::new(["cat"]);
    command.user = Some(b"nobody".to_vec());
    command.stdin = Input::File(b"/etc/shadow".to_vec());
    assert_eq!(
        start(command).0,
        Err(SpawnError::Os(tether_core::Errno::EACCES))
    );

    let path = tmp_path("nobody");
    let mut command = sh("id -u; echo err >&2");
    command.user = Some(b"nobody".to_vec());
    command.stdout = output_file(&path, true);
    command.stderr = Output::Other;
    let (result, rx) = start(command);
    result.unwrap();
    assert_eq!(finish(&rx).2, Some(ExitStatus::Exited(0)));
    let text = std::fs::read_to_string(&path).unwrap();
    let uid: u32 = text.lines().next().unwrap().parse().unwrap();
    assert_eq!(text, format!("{uid}\nerr\n"));
    assert_ne!(uid, 0);
    let metadata = std::fs::metadata(&path).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&metadata), uid);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn capabilities_are_exactly_those_asked_for() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let sets = "grep -E '^Cap(Prm|Eff|Amb)' /proc/self/status | cut -f2; \
                grep '^CapBnd' /proc/self/status | cut -f2";
    let bounding = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:\t").map(str::to_owned))
        .unwrap();
    // kill (5) and net_bind_service (10), as another user: ambient, so they survive execve.
    let mut command = sh(sets);
    command.user = Some(b"nobody".to_vec());
    command.capabilities = Some(tether_core::command::Capabilities::Only(1 << 5 | 1 << 10));
    let (out, _, status) = run(command);
    assert_eq!(status, Some(ExitStatus::Exited(0)));
    let expected = format!("{0}\n{0}\n{0}\n{1}\n", "0000000000000420", bounding);
    assert_eq!(String::from_utf8(out).unwrap(), expected);
    // As root: the bounding set is narrowed too.
    let mut command = sh(sets);
    command.capabilities = Some(tether_core::command::Capabilities::Only(1 << 10));
    let (out, _, _) = run(command);
    assert_eq!(out, "0000000000000400\n".repeat(4).as_bytes());
}
