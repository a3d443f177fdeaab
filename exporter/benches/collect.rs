//! Collection cost with a synthetic procfs of 2 000 processes in 500 containers (100 pods), against
//! the raw cost of reading the same files. Run: `cargo bench -p edgewatt-exporter --bench collect`.
//!
//! Prints numbers; the targets (issue 4) are < 2 ms per collection and < 25 MB RSS. CPU use at a
//! 10 s interval is reported by `--cpu-minutes` runs of the real binary (see BENCHMARKS.md).

use std::fs::File;
use std::time::{Duration, Instant};

use edgewatt_exporter::collector::{Collector, CollectorConfig};
use edgewatt_exporter::fixture::{ids, pod_cgroup, FixtureTree};
use edgewatt_exporter::pods::PodDirectory;
use edgewatt_exporter::procfs::Procfs;
use edgewatt_exporter::sources::discover_local;
use edgewatt_exporter::sysfs::HostRoot;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let procs = 2000usize;
    let containers = 500usize;
    // tmpfs when available: the real /proc is memory-backed too.
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let dir = tempfile::tempdir_in(base).unwrap();
    let t = FixtureTree::new(dir.path());
    t.proc_stat(0, 0);
    t.cpuinfo("Intel(R) Xeon(R) Processor", 2, true);
    t.rapl_zone("0", "package-0", 0, 262_143_328_850);
    t.rapl_zone("0:0", "dram", 0, 262_143_328_850);
    for p in 0..procs {
        let c = p % containers;
        let (uid, cid) = ids(c / 5);
        let cid = if c.is_multiple_of(5) {
            cid
        } else {
            ids(1000 + c).1
        };
        t.process(1000 + p as u32, "worker", 0, &pod_cgroup(&uid, &cid));
    }
    let root = HostRoot::new(t.root());
    let (sources, _) = discover_local(&root);
    let mut collector = Collector::new(
        CollectorConfig {
            node_name: "bench".into(),
            expire_intervals: 3,
            power_budget_watts: None,
            carbon_intensity: None,
            process_detail: false,
        },
        root.clone(),
        sources,
        Box::new(Procfs::new(&root)),
        PodDirectory::default(),
    );
    collector.collect();
    let rounds = 200;
    let mut times = Vec::with_capacity(rounds);
    for r in 1..=rounds as u64 {
        // Move the counters a little, as a live system would (not timed).
        t.rapl_energy("0", r * 1_000_000);
        t.rapl_energy("0:0", r * 200_000);
        t.proc_stat(r * 50, r * 50);
        for p in (0..procs).step_by(7) {
            t.process_ticks(1000 + p as u32, "worker", r);
        }
        let start = Instant::now();
        let snap = collector.collect();
        times.push(start.elapsed());
        assert!(snap.workloads.len() > containers);
    }
    let p50 = percentile(&mut times, 0.5);
    let p99 = percentile(&mut times, 0.99);

    // Raw cost: read the same files (stat of every pid, the node files), nothing else — once the
    // way std's `read_to_string` does (open, statx, lseek, read, read, close), once with the
    // fewest syscalls (openat relative to /proc, one read, close).
    let node_files = [
        "proc/stat",
        "sys/class/powercap/intel-rapl:0/energy_uj",
        "sys/class/powercap/intel-rapl:0:0/energy_uj",
    ];
    let mut raw_std = Vec::with_capacity(rounds);
    let mut buf = String::new();
    for _ in 0..rounds {
        let start = Instant::now();
        for e in std::fs::read_dir(t.path("proc")).unwrap().flatten() {
            let p = e.path().join("stat");
            buf.clear();
            if let Ok(mut f) = std::fs::File::open(&p) {
                use std::io::Read;
                let _ = f.read_to_string(&mut buf);
            }
        }
        for f in node_files {
            let _ = std::fs::read_to_string(t.path(f));
        }
        raw_std.push(start.elapsed());
    }
    let mut raw_min = Vec::with_capacity(rounds);
    let proc_fd = File::open(t.path("proc")).unwrap();
    let mut bytes = [0u8; 4096];
    for _ in 0..rounds {
        let start = Instant::now();
        let mut dir = rustix::fs::Dir::read_from(&proc_fd).unwrap();
        let mut name = String::new();
        while let Some(Ok(e)) = dir.next() {
            let Ok(pid) = e.file_name().to_str() else {
                continue;
            };
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            name.clear();
            name.push_str(pid);
            name.push_str("/stat");
            let flags = rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC;
            if let Ok(fd) = rustix::fs::openat(&proc_fd, &*name, flags, rustix::fs::Mode::empty()) {
                let _ = rustix::io::read(&fd, &mut bytes);
            }
        }
        for f in node_files {
            let _ = std::fs::read_to_string(t.path(f));
        }
        raw_min.push(start.elapsed());
    }
    let raw_std50 = percentile(&mut raw_std, 0.5);
    let raw50 = percentile(&mut raw_min, 0.5);
    println!("collect: {procs} processes in {containers} containers, {rounds} rounds");
    println!(
        "  collection p50 {:.3} ms, p99 {:.3} ms (target < 2 ms)",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    println!(
        "  raw file reads p50: {:.3} ms with std read_to_string, {:.3} ms with openat + one read (our overhead over the latter {:.0} %)",
        raw_std50.as_secs_f64() * 1e3,
        raw50.as_secs_f64() * 1e3,
        (p50.as_secs_f64() / raw50.as_secs_f64() - 1.0) * 100.0
    );
    println!("  RSS {:.1} MB (target < 25 MB)", rss_kib() as f64 / 1024.0);
}
