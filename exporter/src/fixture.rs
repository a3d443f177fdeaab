//! Builders for sysfs/procfs trees in the exact kernel formats, for tests, benchmarks and the
//! end-to-end harness (which scripts battery and power files over time under `--host-root`).
//!
//! Values are written the way the kernel shows them: one decimal number or word and a newline.

use std::path::{Path, PathBuf};

/// A fake host root. Files are plain files; rewrite them to move time forward.
#[derive(Debug, Clone)]
pub struct FixtureTree {
    root: PathBuf,
}

/// Writes through a temporary file and a rename: a reader racing the test sees the old or the
/// new content, never a truncated file — as with the kernel, whose small sysfs/procfs files are
/// produced whole on each read. (A torn `/proc/stat` once cost the estimator a cycle in CI.)
fn write(path: &Path, value: impl std::fmt::Display) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create fixture dir");
    }
    let name = path.file_name().expect("fixture path names a file");
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::write(&tmp, format!("{value}\n")).expect("write fixture file");
    std::fs::rename(&tmp, path).expect("rename fixture file");
}

/// Battery files; `None` leaves the attribute out (drivers differ in what they offer).
#[derive(Debug, Clone, Default)]
pub struct BatteryFiles {
    pub status: &'static str,
    pub capacity: Option<u64>,
    pub energy_now_uwh: Option<u64>,
    pub energy_full_uwh: Option<u64>,
    pub charge_now_uah: Option<u64>,
    pub charge_full_uah: Option<u64>,
    pub voltage_now_uv: Option<u64>,
    pub power_now_uw: Option<u64>,
    pub current_now_ua: Option<i64>,
}

impl FixtureTree {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let t = Self { root: root.into() };
        std::fs::create_dir_all(t.root.join("proc")).expect("create fixture root");
        t
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// Writes any attribute file.
    pub fn set(&self, rel: &str, value: impl std::fmt::Display) {
        write(&self.path(rel), value);
    }

    /// A RAPL zone `intel-rapl:<id>` (`id` like `0` or `0:1`).
    pub fn rapl_zone(&self, id: &str, name: &str, energy_uj: u64, max_range_uj: u64) {
        let dir = format!("sys/class/powercap/intel-rapl:{id}");
        self.set(&format!("{dir}/name"), name);
        self.set(&format!("{dir}/energy_uj"), energy_uj);
        self.set(&format!("{dir}/max_energy_range_uj"), max_range_uj);
        self.set(&format!("{dir}/enabled"), 1);
    }

    pub fn rapl_energy(&self, id: &str, energy_uj: u64) {
        self.set(
            &format!("sys/class/powercap/intel-rapl:{id}/energy_uj"),
            energy_uj,
        );
    }

    pub fn battery(&self, name: &str, b: &BatteryFiles) {
        let dir = format!("sys/class/power_supply/{name}");
        self.set(&format!("{dir}/type"), "Battery");
        self.set(&format!("{dir}/present"), 1);
        self.set(&format!("{dir}/status"), b.status);
        let opt = |attr: &str, v: Option<String>| match v {
            Some(v) => self.set(&format!("{dir}/{attr}"), v),
            None => {
                let _ = std::fs::remove_file(self.path(&format!("{dir}/{attr}")));
            }
        };
        opt("capacity", b.capacity.map(|v| v.to_string()));
        opt("energy_now", b.energy_now_uwh.map(|v| v.to_string()));
        opt("energy_full", b.energy_full_uwh.map(|v| v.to_string()));
        opt("charge_now", b.charge_now_uah.map(|v| v.to_string()));
        opt("charge_full", b.charge_full_uah.map(|v| v.to_string()));
        opt("voltage_now", b.voltage_now_uv.map(|v| v.to_string()));
        opt("power_now", b.power_now_uw.map(|v| v.to_string()));
        opt("current_now", b.current_now_ua.map(|v| v.to_string()));
    }

    /// A supply of `type` `UPS` (one of the ABI's types), with the same files as a battery.
    pub fn ups(&self, name: &str, b: &BatteryFiles) {
        self.battery(name, b);
        self.set(&format!("sys/class/power_supply/{name}/type"), "UPS");
    }

    /// A mains adapter (`AC`, `ADP1`).
    pub fn mains(&self, name: &str, online: bool) {
        let dir = format!("sys/class/power_supply/{name}");
        self.set(&format!("{dir}/type"), "Mains");
        self.set(&format!("{dir}/online"), u8::from(online));
    }

    /// `/proc/stat` with the aggregate line (ticks) and `cpus` per-CPU lines.
    pub fn proc_stat(&self, busy_ticks: u64, idle_ticks: u64) {
        let (user, system) = (busy_ticks * 3 / 4, busy_ticks - busy_ticks * 3 / 4);
        self.set(
            "proc/stat",
            format!("cpu  {user} 0 {system} {idle_ticks} 0 0 0 0 0 0\ncpu0 {user} 0 {system} {idle_ticks} 0 0 0 0 0 0\nintr 0\nctxt 0\nbtime 0\nprocesses 1\nprocs_running 1\nprocs_blocked 0"),
        );
    }

    /// `/proc/<pid>/stat` and `/proc/<pid>/cgroup` (v2 line) for a process.
    pub fn process(&self, pid: u32, comm: &str, cpu_ticks: u64, cgroup: &str) {
        self.process_ticks(pid, comm, cpu_ticks);
        self.set(&format!("proc/{pid}/cgroup"), format!("0::{cgroup}"));
    }

    /// Updates only `/proc/<pid>/stat` (utime = ticks, stime = 0, starttime = pid).
    pub fn process_ticks(&self, pid: u32, comm: &str, cpu_ticks: u64) {
        self.set(
            &format!("proc/{pid}/stat"),
            format!("{pid} ({comm}) S 1 {pid} {pid} 0 -1 4194560 100 0 0 0 {cpu_ticks} 0 0 0 20 0 1 0 {pid} 1000000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0"),
        );
    }

    pub fn remove_process(&self, pid: u32) {
        let _ = std::fs::remove_dir_all(self.path(&format!("proc/{pid}")));
    }

    /// `/proc/cpuinfo` for `threads` logical CPUs of `model`.
    pub fn cpuinfo(&self, model: &str, threads: u32, hypervisor: bool) {
        let flags = if hypervisor {
            "fpu sse2 hypervisor"
        } else {
            "fpu sse2"
        };
        let text: String = (0..threads)
            .map(|i| format!("processor\t: {i}\nvendor_id\t: GenuineIntel\nmodel name\t: {model}\nphysical id\t: 0\ncore id\t: {i}\nflags\t\t: {flags}\n\n"))
            .collect();
        self.set("proc/cpuinfo", text.trim_end());
    }
}

/// One INA3221 channel: the rail's device-tree label, bus voltage (mV) and current (mA); `None`
/// for a channel that is not connected (disabled, as the driver leaves channels without a DT node).
pub type Ina3221Channel = Option<(&'static str, u64, i64)>;

/// hwmon rail monitors, in the kernel's layout (`/sys/class/hwmon/hwmonN/`, `name`, and `device`
/// a link to the I2C device `B-00AA`). Sources: torvalds/linux `Documentation/hwmon/
/// sysfs-interface.rst`, `ina3221.rst`, `ina2xx.rst`, `pmbus-core.rst`; board rail names from
/// energymon/energymon `jetson/JetsonPowerRails.md` (NVIDIA Jetson Developer Guide "Platform Power
/// and Performance" and L4T device trees) and the Alumet Jetson plugin's Xavier NX listing.
impl FixtureTree {
    /// A chip directory `sys/class/hwmon/<hwmon>` named `name`, its `device` link pointing at
    /// `sys/bus/i2c/devices/<i2c>` as on a real system. Returns the directory (relative).
    pub fn hwmon_chip(&self, hwmon: &str, name: &str, i2c: &str) -> String {
        let dir = format!("sys/class/hwmon/{hwmon}");
        self.set(&format!("{dir}/name"), name);
        let dev = self.path(&format!("sys/bus/i2c/devices/{i2c}"));
        std::fs::create_dir_all(&dev).expect("create fixture device");
        let link = self.path(&format!("{dir}/device"));
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(&dev, &link).expect("link fixture device");
        }
        dir
    }

    /// An INA3221 (`ina3221.rst`): per channel `in{n}_label`, `in{n}_enable`, `in{n}_input` (mV),
    /// `curr{n}_input` (mA), `shunt{n}_resistor` (µΩ; Jetson modules use 5 mΩ), plus the shunt
    /// voltage channels `in4..6_input` (µV) and `in7` (their sum), which are not rails.
    pub fn ina3221(&self, hwmon: &str, i2c: &str, channels: [Ina3221Channel; 3]) {
        let dir = self.hwmon_chip(hwmon, "ina3221", i2c);
        let mut shunt_sum = 0;
        for (i, ch) in channels.iter().enumerate() {
            let n = i + 1;
            self.set(&format!("{dir}/shunt{n}_resistor"), 5000);
            self.set(&format!("{dir}/curr{n}_crit"), 32_760);
            match ch {
                Some((label, mv, ma)) => {
                    self.set(&format!("{dir}/in{n}_label"), label);
                    self.set(&format!("{dir}/in{n}_enable"), 1);
                    self.ina3221_rail(hwmon, n, *mv, *ma);
                    shunt_sum += ma * 5;
                    self.set(&format!("{dir}/in{}_input", n + 3), ma * 5);
                }
                None => {
                    self.set(&format!("{dir}/in{n}_enable"), 0);
                    self.set(&format!("{dir}/in{n}_input"), 0);
                    self.set(&format!("{dir}/curr{n}_input"), 0);
                }
            }
        }
        self.set(&format!("{dir}/in7_label"), "sum of shunt voltages");
        self.set(&format!("{dir}/in7_input"), shunt_sum);
        self.set(&format!("{dir}/samples"), 512);
        self.set(&format!("{dir}/update_interval"), 140);
    }

    /// Moves one INA3221 channel (`n` 1..=3) to `mv` × `ma`.
    pub fn ina3221_rail(&self, hwmon: &str, n: usize, mv: u64, ma: i64) {
        let dir = format!("sys/class/hwmon/{hwmon}");
        self.set(&format!("{dir}/in{n}_input"), mv);
        self.set(&format!("{dir}/curr{n}_input"), ma);
    }

    /// Jetson AGX Orin (JetPack 5+): two INA3221 on I2C bus 1. 0x40: `VDD_GPU_SOC`, `VDD_CPU_CV`,
    /// `VIN_SYS_5V0`; 0x41: NC, `VDDQ_VDD2_1V8AO` (fed by `VIN_SYS_5V0`), NC. Module total 4.0 +
    /// 2.0 + 3.0 = 9.0 W; `VDDQ_VDD2_1V8AO` 1.0 W is inside `VIN_SYS_5V0`. hwmon1/hwmon2.
    pub fn jetson_agx_orin(&self) {
        self.ina3221(
            "hwmon1",
            "1-0040",
            [
                Some(("VDD_GPU_SOC", 19_936, 200)), // 3.9872 W
                Some(("VDD_CPU_CV", 19_936, 100)),  // 1.9936 W
                Some(("VIN_SYS_5V0", 5_000, 600)),  // 3.0 W
            ],
        );
        self.ina3221(
            "hwmon2",
            "1-0041",
            [None, Some(("VDDQ_VDD2_1V8AO", 5_000, 200)), None], // 1.0 W
        );
    }

    /// Jetson Xavier NX (JetPack 5+), one INA3221 at 7-0040 (hwmon6 as in the Alumet listing):
    /// `VDD_IN` 5.0 V × 1.2 A = 6.0 W, its sub-rails `VDD_CPU_GPU_CV` 5.0 V × 0.4 A = 2.0 W and
    /// `VDD_SOC` 5.0 V × 0.3 A = 1.5 W.
    pub fn jetson_xavier_nx(&self) {
        self.ina3221(
            "hwmon6",
            "7-0040",
            [
                Some(("VDD_IN", 5_000, 1_200)),
                Some(("VDD_CPU_GPU_CV", 5_000, 400)),
                Some(("VDD_SOC", 5_000, 300)),
            ],
        );
    }

    /// An INA226 (`ina2xx.rst`): `in0_input` shunt mV, `in1_input` bus mV, `curr1_input` mA,
    /// `power1_input` µW (left out when `power_uw` is `None`: the in1×curr1 path), and
    /// `shunt_resistor` µΩ; `label` is the chip's device-tree label attribute, if any.
    pub fn ina226(
        &self,
        hwmon: &str,
        i2c: &str,
        label: Option<&str>,
        mv: u64,
        ma: i64,
        power_uw: Option<u64>,
    ) {
        let dir = self.hwmon_chip(hwmon, "ina226", i2c);
        self.set(&format!("{dir}/shunt_resistor"), 2000);
        self.set(&format!("{dir}/update_interval"), 35);
        if let Some(l) = label {
            self.set(&format!("{dir}/label"), l);
        }
        self.set(&format!("{dir}/in0_input"), ma * 2 / 1000);
        self.set(&format!("{dir}/in1_input"), mv);
        self.set(&format!("{dir}/curr1_input"), ma);
        match power_uw {
            Some(p) => self.set(&format!("{dir}/power1_input"), p),
            None => {
                let _ = std::fs::remove_file(self.path(&format!("{dir}/power1_input")));
            }
        }
    }

    /// A PSU on the generic `pmbus` driver (`pmbus-core.rst`): `in1` `vin`, `in2` `vout1`,
    /// `curr1` `iin`, `curr2` `iout1`, `power1` `pin`, `power2` `pout1` (µW), plus phases of page 1
    /// `power3` `pout1.0` and `power4` `pout1.1`, which are parts of `pout1`.
    pub fn pmbus_psu(&self, hwmon: &str, i2c: &str, pin_uw: u64, pout_uw: u64) {
        let dir = self.hwmon_chip(hwmon, "pmbus", i2c);
        for (attr, label, value) in [
            ("in1", "vin", 230_000),
            ("in2", "vout1", 12_000),
            ("curr1", "iin", (pin_uw / 230_000) as i64),
            ("curr2", "iout1", (pout_uw / 12_000) as i64),
            ("power1", "pin", pin_uw as i64),
            ("power2", "pout1", pout_uw as i64),
            ("power3", "pout1.0", (pout_uw / 2) as i64),
            ("power4", "pout1.1", (pout_uw / 2) as i64),
        ] {
            self.set(&format!("{dir}/{attr}_label"), label);
            self.set(&format!("{dir}/{attr}_input"), value);
        }
        self.set(&format!("{dir}/temp1_input"), 41_000);
    }
}

/// Copies a directory tree (tests serve private, editable copies of Redfish mockups).
pub fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("create copy");
    for e in std::fs::read_dir(src).expect("read source tree").flatten() {
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).expect("copy file");
        }
    }
}

/// Pod cgroup path (containerd, systemd driver, burstable QoS) for `uid` and a 64-hex `container`.
pub fn pod_cgroup(uid: &str, container: &str) -> String {
    format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{container}.scope",
        uid.replace('-', "_")
    )
}

/// A deterministic pod UID and container id for index `i`.
pub fn ids(i: usize) -> (String, String) {
    (
        format!("{:08x}-0000-4000-8000-{:012x}", i, i),
        format!("{:064x}", i + 1),
    )
}
