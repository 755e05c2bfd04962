//! The floors that `bench/run.exs` compares Tether with, measured in plain Rust with no BEAM:
//!
//! - `tether_bench spawn N [--samples]`: N × (spawn `/bin/true`, wait); prints `median_us p99_us`,
//!   or with `--samples` every sample in µs, in order.
//! - `tether_bench read PROGRAM ARGS…`: runs the producer with its stdout on a 1 MiB pipe and
//!   reads it with 1 MiB reads until EOF; prints `bytes seconds`.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::Instant;

fn spawn(runs: usize, print_samples: bool) {
    let mut samples: Vec<u128> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            let status = Command::new("/bin/true").status().expect("spawn /bin/true");
            assert!(status.success());
            started.elapsed().as_nanos()
        })
        .collect();
    if print_samples {
        for sample in &samples {
            println!("{:.1}", *sample as f64 / 1000.0);
        }
        return;
    }
    samples.sort_unstable();
    let median = samples[samples.len() / 2];
    let p99 = samples[(samples.len() * 99 / 100).min(samples.len() - 1)];
    println!("{:.1} {:.1}", median as f64 / 1000.0, p99 as f64 / 1000.0);
}

fn read(program: &str, args: &[String]) {
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the producer");
    let mut stdout = child.stdout.take().expect("a stdout pipe");
    // SAFETY: F_SETPIPE_SZ takes an int and has no memory effects (best effort, as Tether does).
    unsafe { libc::fcntl(stdout.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
    let mut buffer = vec![0u8; 1 << 20];
    let started = Instant::now();
    let mut total: u64 = 0;
    loop {
        match stdout.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(error) => panic!("read: {error}"),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    child.wait().expect("wait for the producer");
    println!("{total} {seconds:.6}");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("spawn") => spawn(
            args.get(1).and_then(|n| n.parse().ok()).unwrap_or(1000),
            args.get(2).map(String::as_str) == Some("--samples"),
        ),
        Some("read") if args.len() > 1 => read(&args[1], &args[2..]),
        _ => {
            eprintln!(
                "usage: tether_bench spawn N [--samples] | tether_bench read PROGRAM ARGS..."
            );
            std::process::exit(2);
        }
    }
}
