//! eBPF vs procfs per-process accounting (issue 5). Needs root; says SKIPPED otherwise.
//! Run: `cargo bench -p edgewatt-exporter --bench ebpf`.
//!
//! 1. Collection cost with ~2 000 live processes (2 000 `sleep`s + this machine's own).
//! 2. Context-switch overhead: a pipe ping-pong between two threads (200 000 round trips), with
//!    and without the program attached.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use edgewatt_exporter::accounting::CpuAccounting;
use edgewatt_exporter::ebpf::Ebpf;
use edgewatt_exporter::procfs::Procfs;
use edgewatt_exporter::sysfs::HostRoot;

fn p(v: &mut [Duration], q: f64) -> f64 {
    v.sort();
    v[((v.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3
}

fn time_collect(acc: &mut dyn CpuAccounting, rounds: usize) -> (f64, f64, usize) {
    let mut n = acc.collect().unwrap().len();
    let mut t = Vec::new();
    for _ in 0..rounds {
        let s = Instant::now();
        n = acc.collect().unwrap().len();
        t.push(s.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    (p(&mut t, 0.5), p(&mut t, 0.99), n)
}

fn ping_pong(round_trips: usize) -> Duration {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 1];
        for _ in 0..round_trips {
            b.read_exact(&mut buf).unwrap();
            b.write_all(&buf).unwrap();
        }
    });
    let mut buf = [7u8; 1];
    let start = Instant::now();
    for _ in 0..round_trips {
        a.write_all(&buf).unwrap();
        a.read_exact(&mut buf).unwrap();
    }
    let d = start.elapsed();
    t.join().unwrap();
    d
}

fn main() {
    let root = HostRoot::new("/");
    let mut children: Vec<std::process::Child> = (0..2000)
        .map(|_| {
            std::process::Command::new("sleep")
                .arg("120")
                .spawn()
                .unwrap()
        })
        .collect();
    let baseline: Vec<Duration> = (0..5).map(|_| ping_pong(200_000)).collect();
    let base = baseline.iter().min().unwrap().as_secs_f64();
    let mut procfs = Procfs::new(&root);
    let (p50, p99, n) = time_collect(&mut procfs, 50);
    println!("procfs: {n} processes, collect p50 {p50:.2} ms, p99 {p99:.2} ms");
    match Ebpf::load(&root) {
        Ok(mut e) => {
            // every process must have run once to be in the map: wake the sleepers? They are
            // idle, so the map holds only processes that ran since the program was attached.
            let (p50, p99, n) = time_collect(&mut e, 50);
            println!(
                "ebpf ({}): {n} processes that ran, collect p50 {p50:.2} ms, p99 {p99:.2} ms",
                e.program_kind()
            );
            let with: Vec<Duration> = (0..5).map(|_| ping_pong(200_000)).collect();
            let w = with.iter().min().unwrap().as_secs_f64();
            println!("pipe ping-pong, 200 000 round trips (best of 5): {:.0} ms without, {:.0} ms with the program: {:+.1} % (goal < 5 %)", base * 1e3, w * 1e3, (w / base - 1.0) * 100.0);
        }
        Err(reason) => println!("SKIPPED eBPF part: {reason}"),
    }
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
}
