//! eBPF vs procfs per-process accounting. Needs root; says SKIPPED otherwise.
//! Run: `cargo bench -p edgewatt-exporter --bench ebpf`.
//!
//! 1. Context-switch overhead: a pipe ping-pong between two threads (200 000 round trips, each
//!    two context switches), alternating without the program, with `tp_btf`
//!    (sched_stat_runtime + sched_switch) and with the `sched/sched_switch` tracepoint fallback.
//! 2. Collection cost with ~2 000 live processes (2 000 `sleep`s started after the program is
//!    attached, so each is in the kernel map, plus 2 CPU burners and this machine's own).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgewatt_exporter::accounting::CpuAccounting;
use edgewatt_exporter::ebpf::Ebpf;
use edgewatt_exporter::procfs::Procfs;
use edgewatt_exporter::sysfs::HostRoot;

const ROUND_TRIPS: usize = 200_000;
const SLEEPERS: usize = 2_000;

fn quantile_ms(v: &mut [Duration], q: f64) -> f64 {
    v.sort();
    v[((v.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3
}

fn time_collect(acc: &mut dyn CpuAccounting, rounds: usize) -> (f64, f64, usize) {
    let mut n = acc.collect().unwrap().len();
    let mut t = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let s = Instant::now();
        n = acc.collect().unwrap().len();
        t.push(s.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    (quantile_ms(&mut t, 0.5), quantile_ms(&mut t, 0.99), n)
}

fn pipe() -> (File, File) {
    let mut fds = [0i32; 2];
    // SAFETY: pipe() fills two fds on success; each is owned exactly once below.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe()");
    unsafe {
        (
            File::from(OwnedFd::from_raw_fd(fds[0])),
            File::from(OwnedFd::from_raw_fd(fds[1])),
        )
    }
}

/// One byte bounced between two threads through two pipes; every hop blocks, so every round
/// trip is (at least) two context switches.
fn ping_pong(round_trips: usize) -> Duration {
    let (mut a_read, mut b_write) = pipe();
    let (mut b_read, mut a_write) = pipe();
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 1];
        for _ in 0..round_trips {
            b_read.read_exact(&mut buf).unwrap();
            b_write.write_all(&buf).unwrap();
        }
    });
    let mut buf = [7u8; 1];
    let start = Instant::now();
    for _ in 0..round_trips {
        a_write.write_all(&buf).unwrap();
        a_read.read_exact(&mut buf).unwrap();
    }
    let d = start.elapsed();
    t.join().unwrap();
    d
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn kill_all(children: &mut [Child]) {
    for c in children.iter_mut() {
        let _ = c.kill();
    }
    for c in children.iter_mut() {
        let _ = c.wait();
    }
}

fn main() {
    if !rustix::process::geteuid().is_root() {
        println!("SKIPPED: the eBPF benchmark needs root (CAP_BPF, CAP_PERFMON)");
        return;
    }
    let root = HostRoot::new("/");
    if let Err(reason) = Ebpf::load(&root) {
        println!("SKIPPED: eBPF not permitted here: {reason}");
        return;
    }

    // 1. context-switch overhead, the three variants interleaved against drift and noise
    let rounds = 5;
    let (mut none, mut btf, mut tp) = (Vec::new(), Vec::new(), Vec::new());
    ping_pong(20_000); // warm-up
                       // the order rotates every round, so no variant always runs first (right after an unload)
    for round in 0..rounds {
        for variant in (0..3).map(|i| (i + round) % 3) {
            match variant {
                0 => none.push(ping_pong(ROUND_TRIPS).as_secs_f64()),
                1 => {
                    let e = Ebpf::load_with(&root, true).unwrap();
                    assert_eq!(e.program_kind(), "tp_btf");
                    btf.push(ping_pong(ROUND_TRIPS).as_secs_f64());
                }
                _ => {
                    let _e = Ebpf::load_with(&root, false).unwrap();
                    tp.push(ping_pong(ROUND_TRIPS).as_secs_f64());
                }
            }
        }
    }
    let (n_min, b_min, t_min) = (
        none.iter().copied().fold(f64::MAX, f64::min),
        btf.iter().copied().fold(f64::MAX, f64::min),
        tp.iter().copied().fold(f64::MAX, f64::min),
    );
    let (n_med, b_med, t_med) = (median(&mut none), median(&mut btf), median(&mut tp));
    let us = |s: f64| s / ROUND_TRIPS as f64 * 1e6;
    println!("pipe ping-pong, {ROUND_TRIPS} round trips, {rounds} interleaved runs each, order rotating (best / median):");
    println!(
        "  without program   {:7.0} / {:7.0} ms  ({:.2} µs per round trip)",
        n_min * 1e3,
        n_med * 1e3,
        us(n_min)
    );
    println!(
        "  tp_btf            {:7.0} / {:7.0} ms  slowdown {:+.1} % best, {:+.1} % median (goal < 5 %)",
        b_min * 1e3,
        b_med * 1e3,
        (b_min / n_min - 1.0) * 100.0,
        (b_med / n_med - 1.0) * 100.0
    );
    println!(
        "  tracepoint        {:7.0} / {:7.0} ms  slowdown {:+.1} % best, {:+.1} % median (goal < 5 %)",
        t_min * 1e3,
        t_med * 1e3,
        (t_min / n_min - 1.0) * 100.0,
        (t_med / n_med - 1.0) * 100.0
    );

    // 2. collection cost with ~2 000 processes
    let mut ebpf = Ebpf::load(&root).unwrap();
    let mut children: Vec<Child> = Vec::with_capacity(SLEEPERS + 2);
    for _ in 0..2 {
        children.push(
            Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .unwrap(),
        );
    }
    for _ in 0..SLEEPERS {
        match Command::new("sleep")
            .arg("120")
            .stdin(Stdio::null())
            .spawn()
        {
            Ok(c) => children.push(c),
            Err(e) => {
                println!("spawned only {} sleepers: {e}", children.len() - 2);
                break;
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut procfs = Procfs::new(&root);
    let (p50, p99, n) = time_collect(&mut procfs, 50);
    println!(
        "collect, {} children + the machine's own processes, 50 rounds:",
        children.len()
    );
    println!("  procfs  {n:5} processes  p50 {p50:7.2} ms  p99 {p99:7.2} ms");
    let (e50, e99, n) = time_collect(&mut ebpf, 50);
    println!(
        "  ebpf    {n:5} processes  p50 {e50:7.2} ms  p99 {e99:7.2} ms  ({}, batch lookup {}, map holds {}; {:.1}x faster at p50)",
        ebpf.program_kind(),
        ebpf.reads_in_batches(),
        ebpf.map_len(),
        p50 / e50
    );
    kill_all(&mut children);
}
