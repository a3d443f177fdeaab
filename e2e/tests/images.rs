//! The container images `make images` writes (`target/images/edgewatt-<component>.oci.tar`, one
//! multi-arch image index per component), read the way a runtime reads them and held to the
//! things that must agree with them:
//!
//! - the OCI image-layout spec (opencontainers/image-spec `image-layout.md`, `image-index.md`,
//!   `manifest.md`, `config.md`, `annotations.md`): `oci-layout`, `index.json` → image index →
//!   one manifest per platform (`platform.os`/`architecture`, the config's too) → config, every
//!   blob's digest and size, layer diff_ids; containerd's `ctr images import` (what
//!   `kind load image-archive` runs) names the image from the index entry's
//!   `org.opencontainers.image.ref.name` when it is a full reference, and picks the node's
//!   platform from the index (`--all-platforms`/`--platform` for others);
//! - each platform's image: its layer unpacked alone into an empty directory runs
//!   `chroot DIR /<entrypoint> --version` (this machine's platform) or
//!   `qemu-aarch64-static DIR/<entrypoint> --version` (arm64), the binary is an ELF for the
//!   platform it is listed under, the extender serves the chart's args and the arm64 exporter
//!   reads a Jetson AGX Orin's rails;
//! - the Dockerfile (same entrypoint, user, ports, files, labels), the chart (its rendered image
//!   references, users and ports are the archives'), and the release script, whose rehearsal
//!   pushes exactly the tested indexes and pins their digests in the chart.
//!
//! Ignored in a plain test run, as they need the archives: `make images-test` builds them and
//! runs `cargo nextest run -p edgewatt-e2e --test images --run-ignored only` (part of `make
//! test`), with `EDGEWATT_IMAGE_ARCHS` naming the platforms it built (`make test`: this machine's;
//! `make release`: amd64 and arm64; unset: both).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use edgewatt_e2e::{apiserver::ApiServer, chart};
use serde_json::{json, Value};

const COMPONENTS: [&str; 3] = ["exporter", "controller", "scheduler"];
const NS: &str = "edgewatt-system";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&read(path))
        .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

/// Runs a command; panics with its output unless it succeeds.
fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn sha256(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

/// `key = "value"` of Cargo.toml's `[workspace.package]`.
fn workspace_package(key: &str) -> String {
    let text = String::from_utf8(read(&repo().join("Cargo.toml"))).unwrap();
    let section = text
        .split("[workspace.package]")
        .nth(1)
        .expect("[workspace.package]");
    section
        .lines()
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
        })
        .unwrap_or_else(|| panic!("no {key} in [workspace.package]"))
}

fn chart_app_version() -> String {
    let text = String::from_utf8(read(&repo().join("charts/edgewatt/Chart.yaml"))).unwrap();
    let chart: Value = serde_saphyr::from_str(&text).expect("Chart.yaml");
    chart["appVersion"]
        .as_str()
        .expect("appVersion")
        .to_string()
}

/// coreutils' `chroot`, by path: the commands run with an empty environment (no PATH), as in a
/// container.
fn chroot() -> Command {
    let path = ["/usr/sbin/chroot", "/usr/bin/chroot", "/sbin/chroot"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("coreutils chroot");
    let mut cmd = Command::new(path);
    cmd.env_clear();
    cmd
}

/// chroot needs root (effective uid 0: /proc/self belongs to the process's effective user);
/// says loudly when the test cannot run it.
fn chroot_allowed() -> bool {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root {
        eprintln!("SKIPPED: chroot needs root (make test runs as root in CI)");
    }
    root
}

/// Debian's qemu-user-static (`make deps`): runs an aarch64 binary on this machine, with an
/// empty environment. A static binary needs nothing else from the host.
fn qemu_aarch64() -> Command {
    let path = "/usr/bin/qemu-aarch64-static";
    assert!(
        Path::new(path).exists(),
        "{path} missing: `make deps` (as root) installs qemu-user-static, which the arm64 checks need"
    );
    let mut cmd = Command::new(path);
    cmd.env_clear();
    cmd
}

/// `GOARCH` of this machine, as an image config's `architecture` names it.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The platforms the archives must hold: `EDGEWATT_IMAGE_ARCHS` (what `make images-check` /
/// `make images-test` built), else both.
fn expected_archs() -> BTreeSet<String> {
    std::env::var("EDGEWATT_IMAGE_ARCHS")
        .unwrap_or_else(|_| "amd64 arm64".into())
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Says loudly why an arm64 check does not run: `make test` builds this machine's platform only.
fn arm64_built() -> bool {
    let built = expected_archs().contains("arm64");
    if !built {
        eprintln!(
            "SKIPPED: the arm64 images are not built by this run (EDGEWATT_IMAGE_ARCHS={:?}); \
             `make release` and `make images-test IMAGES_TEST_ARCHS=\"amd64 arm64\"` build and \
             test them (the arm64 smoke test runs instead)",
            expected_archs()
        );
    }
    built
}

/// One platform's image of an archive: manifest, config and unpacked root filesystem.
struct Image {
    component: &'static str,
    /// `platform.architecture` of its index entry (= the config's `architecture`).
    arch: String,
    /// Digest of its manifest (listed in the index).
    manifest_digest: String,
    config: Value,
    rootfs: PathBuf,
    /// Regular files of the layers: path (no leading `/`) → (mode, uid, gid).
    files: BTreeMap<String, (u32, u32, u32)>,
}

/// One archive, unpacked: its layout, the image index and each platform's image.
struct Archive {
    component: &'static str,
    _dir: tempfile::TempDir,
    /// `org.opencontainers.image.ref.name` of the only entry in index.json.
    reference: String,
    /// Digest of the image index (what a registry serves the tag under; the chart pins it).
    index_digest: String,
    /// By architecture.
    images: BTreeMap<String, Image>,
}

impl Archive {
    fn open(component: &'static str) -> Self {
        let archive = repo().join(format!("target/images/edgewatt-{component}.oci.tar"));
        assert!(
            archive.exists(),
            "{} missing: run `make images` (or `make images-test`)",
            archive.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        std::fs::create_dir(&layout).unwrap();
        run(Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&layout));
        let oci_layout = json_file(&layout.join("oci-layout"));
        assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0", "{component}");
        let top = json_file(&layout.join("index.json"));
        assert_eq!(top["schemaVersion"], 2, "{component} index.json");
        let entries = top["manifests"].as_array().expect("index.manifests");
        assert_eq!(entries.len(), 1, "{component}: one image index per archive");
        let desc = &entries[0];
        assert_eq!(
            desc["mediaType"], INDEX,
            "{component}: index.json lists an image index"
        );
        let reference = desc["annotations"]["org.opencontainers.image.ref.name"]
            .as_str()
            .unwrap_or_else(|| panic!("{component}: index entry without a ref.name"))
            .to_string();
        let index = blob_json(&layout, desc);
        assert_eq!(index["schemaVersion"], 2, "{component}: image index");
        assert_eq!(index["mediaType"], INDEX, "{component}: image index");
        let mut images = BTreeMap::new();
        for entry in index["manifests"].as_array().expect("index manifests") {
            assert_eq!(entry["mediaType"], MANIFEST, "{component}: {entry}");
            let platform = &entry["platform"];
            assert_eq!(platform["os"], "linux", "{component}: {entry}");
            let arch = platform["architecture"]
                .as_str()
                .unwrap_or_else(|| panic!("{component}: no architecture in {entry}"))
                .to_string();
            let manifest = blob_json(&layout, entry);
            assert_eq!(manifest["schemaVersion"], 2);
            assert_eq!(
                manifest["config"]["mediaType"],
                "application/vnd.oci.image.config.v1+json"
            );
            let config = blob_json(&layout, &manifest["config"]);
            assert_eq!(
                config["architecture"], arch,
                "{component}: the config's architecture is its index entry's"
            );
            assert_eq!(config["os"], "linux", "{component} {arch}");
            let rootfs = dir.path().join(format!("rootfs-{arch}"));
            std::fs::create_dir(&rootfs).unwrap();
            let layers = manifest["layers"].as_array().expect("layers");
            let diff_ids = config["rootfs"]["diff_ids"].as_array().expect("diff_ids");
            assert_eq!(
                layers.len(),
                diff_ids.len(),
                "{component} {arch}: a diff_id per layer"
            );
            let mut files = BTreeMap::new();
            for (layer, diff_id) in layers.iter().zip(diff_ids) {
                files.extend(unpack_layer(&layout, layer, diff_id, &rootfs));
            }
            let image = Image {
                component,
                arch: arch.clone(),
                manifest_digest: entry["digest"].as_str().unwrap().to_string(),
                config,
                rootfs,
                files,
            };
            assert!(
                images.insert(arch.clone(), image).is_none(),
                "{component}: {arch} listed twice"
            );
        }
        Self {
            component,
            index_digest: desc["digest"].as_str().unwrap().to_string(),
            _dir: dir,
            reference,
            images,
        }
    }

    /// The image of a platform the archive must hold.
    fn image(&self, arch: &str) -> &Image {
        self.images.get(arch).unwrap_or_else(|| {
            panic!(
                "{}: no {arch} image; the index lists {:?}",
                self.component,
                self.images.keys()
            )
        })
    }

    /// This machine's platform: what chroot runs and the chart tests read.
    fn native(&self) -> &Image {
        self.image(oci_arch())
    }
}

impl Image {
    fn entrypoint(&self) -> String {
        format!("/usr/local/bin/edgewatt-{}", self.component)
    }

    /// The entrypoint's path in the unpacked root filesystem.
    fn binary(&self) -> PathBuf {
        self.rootfs.join(self.entrypoint().trim_start_matches('/'))
    }

    fn label(&self, key: &str) -> &str {
        self.config["config"]["Labels"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{} {}: no label {key}", self.component, self.arch))
    }

    /// `(uid, gid)` of the config's `User`, which must be numeric: the kubelet can only check
    /// `runAsNonRoot` against a numeric user, and the image has no /etc/passwd.
    fn user(&self) -> (u32, u32) {
        let user = self.config["config"]["User"].as_str().unwrap_or_default();
        let (u, g) = user.split_once(':').unwrap_or((user, user));
        let num = |s: &str| {
            s.parse()
                .unwrap_or_else(|_| panic!("{}: User {user:?} is not numeric", self.component))
        };
        (num(u), num(g))
    }
}

/// A blob, checked against its descriptor (digest and size), as JSON.
fn blob_json(layout: &Path, desc: &Value) -> Value {
    json_file(&checked_blob(layout, desc))
}

fn checked_blob(layout: &Path, desc: &Value) -> PathBuf {
    let digest = desc["digest"].as_str().expect("descriptor digest");
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let path = layout.join("blobs/sha256").join(hex);
    assert_eq!(
        sha256(&path),
        hex,
        "blob {digest} does not match its digest"
    );
    let size = std::fs::metadata(&path).unwrap().len();
    assert_eq!(Some(size), desc["size"].as_u64(), "blob {digest}: size");
    path
}

/// Unpacks one layer into `rootfs` after checking it against its diff_id (the digest of the
/// uncompressed tar); returns its regular files with mode and owner.
fn unpack_layer(
    layout: &Path,
    layer: &Value,
    diff_id: &Value,
    rootfs: &Path,
) -> BTreeMap<String, (u32, u32, u32)> {
    let blob = checked_blob(layout, layer);
    let tar = rootfs.with_file_name("layer.tar");
    let media = layer["mediaType"].as_str().unwrap_or_default();
    match media {
        "application/vnd.oci.image.layer.v1.tar+gzip" => {
            let out = run(Command::new("gzip").arg("-dc").arg(&blob));
            std::fs::write(&tar, out.stdout).unwrap();
        }
        "application/vnd.oci.image.layer.v1.tar" => {
            std::fs::copy(&blob, &tar).unwrap();
        }
        other => panic!("layer media type {other}"),
    }
    assert_eq!(
        Some(format!("sha256:{}", sha256(&tar)).as_str()),
        diff_id.as_str(),
        "layer diff_id"
    );
    run(Command::new("tar")
        .args(["--numeric-owner", "-xpf"])
        .arg(&tar)
        .arg("-C")
        .arg(rootfs));
    let listing = run(Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(&tar));
    String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter(|l| l.starts_with('-'))
        .map(parse_tar_line)
        .collect()
}

/// `-rwxr-xr-x 0/0 123 1970-01-01 00:00 usr/local/bin/x` → (`usr/local/bin/x`, (0o755, 0, 0)).
fn parse_tar_line(line: &str) -> (String, (u32, u32, u32)) {
    let f: Vec<&str> = line.split_whitespace().collect();
    let mode = f[0][1..]
        .chars()
        .fold(0, |m, c| (m << 1) | u32::from(c != '-'));
    let (uid, gid) = f[1].split_once('/').expect("uid/gid");
    (
        f[5..].join(" ").trim_start_matches("./").to_string(),
        (mode, uid.parse().unwrap(), gid.parse().unwrap()),
    )
}

/// True when an ELF file asks for a program interpreter (a dynamic loader): PT_INTERP (3) in
/// its program headers (ELF64 little-endian, `man 5 elf`).
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not ELF64");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == 3
    })
}

/// The OCI architecture of an ELF64 little-endian file's `e_machine` (offset 0x12; `man 5 elf`,
/// `<elf.h>`: EM_X86_64 62, EM_AARCH64 183).
fn elf_arch(elf: &[u8]) -> &'static str {
    match u16::from_le_bytes([elf[0x12], elf[0x13]]) {
        62 => "amd64",
        183 => "arm64",
        other => panic!("ELF machine {other}"),
    }
}

fn git_head() -> String {
    let out = run(Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(repo()));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Each archive is one image index listing exactly the built platforms (`linux/amd64` and
/// `linux/arm64` for a release), every blob matching its digest (checked by `Archive::open`),
/// its digest the one `make images` recorded in `edgewatt-<component>.digest`; the platforms'
/// images are the same image but for the architecture of their binary.
#[test]
#[ignore = "needs `make images`; run by `make images-test`"]
fn each_archive_is_one_index_of_the_built_platforms_with_verified_digests() {
    let want = expected_archs();
    for c in COMPONENTS {
        let a = Archive::open(c);
        assert_eq!(
            a.images.keys().cloned().collect::<BTreeSet<_>>(),
            want,
            "{c}: the platforms in the index"
        );
        let recorded = repo().join(format!("target/images/edgewatt-{c}.digest"));
        assert_eq!(
            String::from_utf8(read(&recorded)).unwrap().trim(),
            a.index_digest,
            "{c}: {} (buildah's --digestfile)",
            recorded.display()
        );
        let manifests: BTreeSet<&str> = a
            .images
            .values()
            .map(|i| i.manifest_digest.as_str())
            .collect();
        assert_eq!(manifests.len(), a.images.len(), "{c}: one manifest each");
        let first = a.images.values().next().unwrap();
        for img in a.images.values() {
            let elf = read(&img.binary());
            assert_eq!(
                elf_arch(&elf),
                img.arch,
                "{c}: the binary listed under {} is for another machine",
                img.arch
            );
            let mut cfg = img.config["config"].clone();
            let mut cfg0 = first.config["config"].clone();
            // the same entrypoint, user, ports, labels and env on every platform
            for v in [&mut cfg, &mut cfg0] {
                v.as_object_mut().unwrap().remove("Labels");
            }
            assert_eq!(cfg, cfg0, "{c}: {} vs {}", img.arch, first.arch);
            assert_eq!(
                img.config["config"]["Labels"], first.config["config"]["Labels"],
                "{c}: labels of {} vs {}",
                img.arch, first.arch
            );
            assert_eq!(
                img.files.keys().collect::<Vec<_>>(),
                first.files.keys().collect::<Vec<_>>(),
                "{c}: files of {} vs {}",
                img.arch,
                first.arch
            );
        }
    }
}

/// Index, manifest, config and labels of each archive: the tag the chart pulls by default,
/// the entrypoint, a numeric user (root only for the exporter), the OCI labels with the
/// version, revision, source and licence of this checkout, on every platform.
#[test]
#[ignore = "needs `make images`; run by `make images-test`"]
fn archives_are_oci_images_with_tag_entrypoint_user_and_labels() {
    let version = chart_app_version();
    assert_eq!(
        version,
        env!("CARGO_PKG_VERSION"),
        "Chart.yaml appVersion and the crates' version differ: the image tag would lie"
    );
    for c in COMPONENTS {
        let a = Archive::open(c);
        assert_eq!(
            a.reference,
            format!("ghcr.io/edgewatt/edgewatt-{c}:{version}"),
            "{c}: the tag"
        );
        for img in a.images.values() {
            let arch = &img.arch;
            let cfg = &img.config["config"];
            assert_eq!(cfg["Entrypoint"], json!([img.entrypoint()]), "{c} {arch}");
            assert!(
                cfg["Cmd"].is_null(),
                "{c} {arch}: no Cmd; the chart passes args"
            );
            let (uid, gid) = img.user();
            if c == "exporter" {
                assert_eq!((uid, gid), (0, 0), "the exporter runs as root (RAPL, eBPF)");
            } else {
                assert!(
                    uid != 0 && gid != 0,
                    "{c} {arch} must not run as root: {uid}:{gid}"
                );
            }
            assert_eq!(img.label("org.opencontainers.image.version"), version);
            assert_eq!(
                img.label("org.opencontainers.image.revision"),
                git_head(),
                "{c} {arch}: built from another commit — rerun `make images`"
            );
            assert_eq!(
                img.label("org.opencontainers.image.source"),
                workspace_package("repository")
            );
            assert_eq!(
                img.label("org.opencontainers.image.licenses"),
                workspace_package("license")
            );
            assert_eq!(
                img.label("org.opencontainers.image.title"),
                format!("edgewatt-{c}")
            );
            let created = img.label("org.opencontainers.image.created");
            assert!(
                chrono::DateTime::parse_from_rfc3339(created).is_ok(),
                "{c} {arch}: created {created:?} is not RFC 3339"
            );
        }
    }
}

/// Each image holds its static binary and the CA bundle, nothing else, owned by root and not
/// writable by the (non-root) user it runs as.
#[test]
#[ignore = "needs `make images`; run by `make images-test`"]
fn archives_hold_a_static_binary_and_the_ca_bundle_only() {
    for c in COMPONENTS {
        for img in Archive::open(c).images.values() {
            let arch = &img.arch;
            let bin = format!("usr/local/bin/edgewatt-{c}");
            let ca = "etc/ssl/certs/ca-certificates.crt".to_string();
            assert_eq!(
                img.files.keys().cloned().collect::<BTreeSet<_>>(),
                BTreeSet::from([bin.clone(), ca.clone()]),
                "{c} {arch}: files"
            );
            assert_eq!(
                img.files[&bin],
                (0o755, 0, 0),
                "{c} {arch}: {bin} mode/owner"
            );
            assert_eq!(img.files[&ca], (0o644, 0, 0), "{c} {arch}: {ca} mode/owner");
            let elf = read(&img.rootfs.join(&bin));
            assert!(
                !has_interpreter(&elf),
                "{c} {arch}: {bin} needs a dynamic loader"
            );
            let bundle = String::from_utf8(read(&img.rootfs.join(&ca))).unwrap();
            let certs = bundle.matches("-----BEGIN CERTIFICATE-----").count();
            assert!(
                certs >= 50 && certs == bundle.matches("-----END CERTIFICATE-----").count(),
                "{c} {arch}: the CA bundle holds {certs} certificates"
            );
        }
    }
}

/// `chroot DIR /<entrypoint> --version` in the unpacked layers alone: the image needs nothing
/// from the host (no loader, no libc), and prints the chart's appVersion.
#[test]
#[ignore = "needs `make images`; run by `make images-test`"]
fn each_image_runs_alone_in_a_chroot_and_reports_the_chart_version() {
    if !chroot_allowed() {
        return;
    }
    let version = chart_app_version();
    for c in COMPONENTS {
        let a = Archive::open(c);
        let img = a.native();
        let out = run(chroot()
            .arg(&img.rootfs)
            .arg(img.entrypoint())
            .arg("--version"));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("edgewatt-{c} {version}"),
            "{c} --version in the image"
        );
    }
}

// ---- arm64: the same images for edge boards, run under QEMU ----------------------------------

/// A Jetson AGX Orin's root filesystem (`FixtureTree::jetson_agx_orin`, the kernel's INA3221
/// hwmon layout with the L4T rail labels) and the module power its top rails add up to:
/// bus mV × mA of `VDD_GPU_SOC`, `VDD_CPU_CV`, `VIN_SYS_5V0` (`VDDQ_VDD2_1V8AO` is fed by
/// `VIN_SYS_5V0` and not added) — exporter/tests/hwmon_rails.rs `AGX_ORIN_MODULE`.
fn jetson_agx_orin() -> (tempfile::TempDir, f64) {
    let dir = tempfile::tempdir().unwrap();
    let tree = edgewatt_exporter::fixture::FixtureTree::new(dir.path());
    tree.jetson_agx_orin();
    tree.proc_stat(100, 100);
    (dir, 19.936 * 0.2 + 19.936 * 0.1 + 5.0 * 0.6)
}

/// `edgewatt-exporter … top --once --output json` (an aarch64 binary, under qemu) on the Jetson
/// AGX Orin fixture: hwmon is the node's source, its watts are the module total, and every
/// rail is read.
fn assert_reads_jetson_rails(exporter: &Path) {
    let (dir, module_watts) = jetson_agx_orin();
    let out = run(qemu_aarch64()
        .arg(exporter)
        .arg("--host-root")
        .arg(dir.path())
        // Not the chart's args: this is `top`, the local main job (the chart runs `serve`, which
        // the smoke build — `make run`'s features — leaves out). No cluster here, and eBPF of an
        // aarch64 binary under qemu-user on this x86_64 kernel is no test of the board: procfs.
        .args(["--node-name", "jetson", "--kubernetes", "off"])
        .args(["--attribution", "procfs", "--interval", "1s"])
        .args(["top", "--once", "--output", "json"]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "top --once --output json under qemu: {e}\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(v["node_name"], "jetson", "{v}");
    assert_eq!(v["node_source"], "hwmon", "{v}");
    let watts = v["node_watts"].as_f64().expect("node_watts");
    assert!(
        (watts - module_watts).abs() < 1e-6,
        "node {watts} W, the fixture's module {module_watts} W: {v}"
    );
    let details = v["source_details"].to_string();
    for rail in [
        "VDD_GPU_SOC",
        "VDD_CPU_CV",
        "VIN_SYS_5V0",
        "VDDQ_VDD2_1V8AO",
    ] {
        assert!(details.contains(rail), "{rail} not read: {details}");
    }
}

/// The arm64 images: each binary, cross-compiled from x86_64, starts from its unpacked image
/// under `qemu-aarch64-static` (static: nothing from the host, not even a loader) and prints
/// the chart's version; the arm64 exporter reads a Jetson AGX Orin's rails.
#[test]
#[ignore = "needs `make images`; run by `make images-test`"]
fn arm64_images_run_under_qemu_and_the_exporter_reads_jetson_rails() {
    if !arm64_built() {
        return;
    }
    let version = chart_app_version();
    for c in COMPONENTS {
        let a = Archive::open(c);
        let img = a.image("arm64");
        let out = run(qemu_aarch64().arg(img.binary()).arg("--version"));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("edgewatt-{c} {version}"),
            "{c} --version in the arm64 image, under qemu"
        );
        if c == "exporter" {
            assert_reads_jetson_rails(&img.binary());
        }
    }
}

/// `make test`'s arm64 check when it builds no arm64 image (`make image-arm64-smoke`): the
/// exporter as `make run` builds it, compiled for aarch64-unknown-linux-musl with the images'
/// profile, toolchain and linker, is a static aarch64 binary, runs under qemu and reads a Jetson
/// AGX Orin's rails.
#[test]
#[ignore = "needs `make images`; run by `make images-test`"]
fn arm64_smoke_build_runs_under_qemu_and_reads_jetson_rails() {
    let bin = repo().join("target/images/smoke/arm64/edgewatt-exporter");
    if !bin.exists() {
        assert!(
            arm64_built(),
            "{} missing: `make images-test` builds it (make image-arm64-smoke) when it builds no arm64 image",
            bin.display()
        );
        eprintln!("SKIPPED: no arm64 smoke build; the arm64 images are tested instead");
        return;
    }
    let elf = read(&bin);
    assert_eq!(elf_arch(&elf), "arm64", "{}", bin.display());
    assert!(!has_interpreter(&elf), "{}: not static", bin.display());
    let out = run(qemu_aarch64().arg(&bin).arg("--version"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("edgewatt-exporter {}", chart_app_version())
    );
    assert_reads_jetson_rails(&bin);
}

// ---- the chart, rendered by Helm's engine into the API server double -------------------------

/// Pod templates of what `helm install` created, by workload name, and the rendered NOTES.
struct Rendered {
    pods: BTreeMap<String, Value>,
    notes: String,
}

impl Rendered {
    fn pod(&self, name: &str) -> &Value {
        self.pods
            .get(name)
            .unwrap_or_else(|| panic!("{name} not rendered; have {:?}", self.pods.keys()))
    }

    fn container(&self, name: &str) -> &Value {
        &self.pod(name)["containers"][0]
    }

    fn image(&self, name: &str) -> &str {
        self.container(name)["image"].as_str().expect("image")
    }
}

/// `helm install edgewatt charts/edgewatt` with `values` into the API server double, through
/// `edgewatt_e2e::chart::install` (Helm's engine via helm-sdkpy, as every chart test runs it);
/// Err(Helm's message) when Helm refuses.
fn helm_install(values: Value) -> Result<Rendered, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let s = ApiServer::start().await.expect("API server double");
        s.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
            .unwrap();
        let release = tokio::task::block_in_place(|| chart::install(&s, "edgewatt", NS, &values))
            .map_err(|e| format!("{e:#}"))?;
        let mut pods = BTreeMap::new();
        for o in s
            .list("deployments")
            .into_iter()
            .chain(s.list("daemonsets"))
        {
            let name = o["metadata"]["name"].as_str().unwrap().to_string();
            pods.insert(name, o["spec"]["template"]["spec"].clone());
        }
        Ok(Rendered {
            pods,
            notes: release.notes(),
        })
    })
}

/// Workload name of each component in a release named `edgewatt`.
fn workload(c: &str) -> String {
    format!("edgewatt-{c}")
}

/// `registry/rest` with another registry.
fn with_registry(reference: &str, registry: &str) -> String {
    let (_, rest) = reference
        .split_once('/')
        .expect("reference with a registry");
    format!("{registry}/{rest}")
}

/// Defaults: the chart pulls exactly the archives' tags (tag = appVersion, IfNotPresent), runs
/// each container as the image's user and on the image's port.
#[test]
#[ignore = "needs `make images`; run by `make images-test`"]
fn chart_defaults_pull_the_built_tags_as_the_images_user_and_port() {
    let r = helm_install(json!({})).expect("default install");
    for c in COMPONENTS {
        let a = Archive::open(c);
        let img = a.native();
        let name = workload(c);
        assert_eq!(r.image(&name), a.reference, "{c}: rendered image");
        assert_eq!(r.container(&name)["imagePullPolicy"], "IfNotPresent");
        let (uid, _) = img.user();
        let pod_uid = &r.pod(&name)["securityContext"]["runAsUser"];
        let ctr_uid = &r.container(&name)["securityContext"]["runAsUser"];
        let rendered_uid = if ctr_uid.is_null() { pod_uid } else { ctr_uid };
        assert_eq!(rendered_uid.as_u64(), Some(uid.into()), "{c}: runAsUser");
        let port = r.container(&name)["ports"][0]["containerPort"]
            .as_u64()
            .unwrap();
        let exposed: Vec<&String> = img.config["config"]["ExposedPorts"]
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        assert_eq!(
            exposed,
            [&format!("{port}/tcp")],
            "{c}: EXPOSE vs the chart's port"
        );
    }
}

/// Until the images are published, NOTES say how to get them: the three references the pods
/// pull (exactly the archives'), built by `make images` and loaded with `ctr images import` or
/// `kind load image-archive`, or pushed by `make release` to a registry of one's own.
#[test]
#[ignore = "needs `make images`; run by `make images-test`"]
fn notes_name_the_images_and_how_to_build_and_load_them() {
    let r = helm_install(json!({})).expect("default install");
    for c in COMPONENTS {
        let a = Archive::open(c);
        assert!(
            r.notes.lines().any(|l| l.trim() == a.reference),
            "{c}: NOTES name {}:\n{}",
            a.reference,
            r.notes
        );
    }
    for how in [
        "make images",
        "ctr -n k8s.io images import target/images/edgewatt-<component>.oci.tar",
        "kind load image-archive target/images/edgewatt-<component>.oci.tar",
        "make release",
    ] {
        assert!(r.notes.contains(how), "NOTES say {how:?}:\n{}", r.notes);
    }
    let archive = repo().join("target/images/edgewatt-exporter.oci.tar");
    assert!(
        archive.exists(),
        "the NOTES' path is where make images writes"
    );
}

/// `global.imageRegistry` moves all three images to a mirror (same repository and tag, what
/// `make images IMAGE_REGISTRY=<mirror>` tags), keeps the upstream kube-scheduler of the second
/// scheduler where it is, and `imagePullSecrets` reach every pod.
#[test]
#[ignore = "needs `make images`; run by `make images-test`"]
fn global_image_registry_moves_the_three_images_and_pull_secrets_reach_every_pod() {
    let mirror = "registry.example:5000";
    let r = helm_install(json!({
        "global": {"imageRegistry": mirror},
        "imagePullSecrets": [{"name": "regcred"}],
        "scheduler": {"secondScheduler": {"enabled": true}}
    }))
    .expect("install with a mirror");
    for c in COMPONENTS {
        let a = Archive::open(c);
        assert_eq!(
            r.image(&workload(c)),
            with_registry(&a.reference, mirror),
            "{c}"
        );
    }
    assert!(
        r.image("edgewatt-second-scheduler")
            .starts_with("registry.k8s.io/kube-scheduler:"),
        "the upstream kube-scheduler is not ours to move: {}",
        r.image("edgewatt-second-scheduler")
    );
    for (name, pod) in &r.pods {
        assert_eq!(
            pod["imagePullSecrets"],
            json!([{"name": "regcred"}]),
            "{name}"
        );
    }
}

/// Pinning by digest renders `repository@<the archive's image index digest>` (what a registry
/// serves the pushed multi-arch image under; the tag is then ignored), an empty per-image registry leaves
/// a full repository as it is, and a malformed digest is refused with a clear message.
#[test]
#[ignore = "needs `make images`; run by `make images-test`"]
fn digest_pins_the_manifest_and_a_bad_digest_is_refused() {
    let a = Archive::open("controller");
    let r = helm_install(json!({
        "controller": {"image": {"digest": a.index_digest}},
        "scheduler": {"image": {"registry": "", "repository": "mirror.local/edgewatt/scheduler", "tag": "dev"}}
    }))
    .expect("install pinned by digest");
    let (repository, _) = a.reference.rsplit_once(':').unwrap();
    assert_eq!(
        r.image("edgewatt-controller"),
        format!("{repository}@{}", a.index_digest)
    );
    assert_eq!(
        r.image("edgewatt-scheduler"),
        "mirror.local/edgewatt/scheduler:dev"
    );
    let err = helm_install(json!({"exporter": {"image": {"digest": "0.1.0"}}}))
        .err()
        .expect("a tag in the digest field must be refused");
    // values.schema.json refuses it first, naming the value and the digest form expected (the
    // template's own `fail` stays for charts rendered without schema validation)
    assert!(
        err.contains("/exporter/image/digest") && err.contains("[a-f0-9]{32,}"),
        "Helm's message: {err}"
    );
}

/// The image does more than print its version: the extender, started from the unpacked layers
/// alone with exactly the args the chart renders (only the listen port moved to a free one),
/// serves /healthz and its metrics (Prometheus, unreachable from there, leaves it failing open).
#[test]
#[ignore = "needs `make images`; run by `make images-test`"]
fn the_extender_image_serves_with_the_charts_args_in_a_chroot() {
    if !chroot_allowed() {
        return;
    }
    edgewatt_e2e::install_crypto_provider();
    let r = helm_install(json!({})).expect("default install");
    let a = Archive::open("scheduler");
    let img = a.native();
    let port = edgewatt_e2e::free_port();
    let args: Vec<String> = r.container("edgewatt-scheduler")["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .map(|a| {
            if a.starts_with("--listen=") {
                format!("--listen=127.0.0.1:{port}")
            } else {
                a
            }
        })
        .collect();
    assert!(args.iter().any(|a| a.starts_with("--listen=127.0.0.1:")));
    let (uid, gid) = img.user();
    let mut child = chroot()
        .arg(format!("--userspec={uid}:{gid}"))
        .arg(&img.rootfs)
        .arg(img.entrypoint())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chroot");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        match client.get(format!("{base}/healthz")).send() {
            Ok(resp) => break resp,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "the extender in the image never served: {e}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    };
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .and_then(|r| r.text());
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(health.text().unwrap(), "ok");
    let metrics = metrics.expect("/metrics");
    assert!(
        metrics.contains("edgewatt_scheduler_fail_open"),
        "/metrics of the extender in the image:\n{metrics}"
    );
}

// ---- the Dockerfile: the same layout as the offline path --------------------------------------

/// One `FROM [--platform=…] … [AS name]` stage: its base, platform flag and instructions
/// (continuations joined).
struct Stage {
    name: String,
    base: String,
    platform: Option<String>,
    instructions: Vec<(String, String)>,
}

fn dockerfile_stages() -> Vec<Stage> {
    let text = String::from_utf8(read(&repo().join("Dockerfile"))).unwrap();
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => logical.push(std::mem::take(&mut current) + line),
        }
    }
    // ARGs before the first FROM: defaults a stage takes with a bare `ARG NAME`
    let mut stages: Vec<Stage> = vec![Stage {
        name: String::new(),
        base: String::new(),
        platform: None,
        instructions: Vec::new(),
    }];
    for l in logical {
        let (op, rest) = l.split_once(' ').unwrap_or((&l, ""));
        let rest = rest.trim().to_string();
        if op.eq_ignore_ascii_case("FROM") {
            let (flags, words): (Vec<&str>, Vec<&str>) =
                rest.split_whitespace().partition(|w| w.starts_with("--"));
            stages.push(Stage {
                base: words[0].to_string(),
                name: words.get(2).unwrap_or(&"").to_string(),
                platform: flags
                    .iter()
                    .find_map(|f| f.strip_prefix("--platform="))
                    .map(String::from),
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push((op.to_ascii_uppercase(), rest));
        }
    }
    stages
}

/// Words of an instruction, split on blanks outside double quotes, quotes removed.
fn words(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for ch in s.chars() {
        match ch {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// What a Dockerfile target puts in its image, following its `FROM` chain to the root.
#[derive(Debug, Default)]
struct DockerTarget {
    root: String,
    args: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    files: BTreeSet<String>,
    /// (stage, source) of each COPY --from.
    sources: BTreeSet<(String, String)>,
    user: String,
    exposed: BTreeSet<String>,
    entrypoint: Value,
}

/// BuildKit's automatic platform ARGs (Dockerfile reference, "Automatic platform ARGs in the
/// global scope"): set per platform built, kept symbolic here.
const PLATFORM_ARGS: [&str; 8] = [
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
];

/// Default of an ARG declared before the first FROM.
fn global_arg(stages: &[Stage], name: &str) -> String {
    if PLATFORM_ARGS.contains(&name) {
        return format!("${{{name}}}");
    }
    stages[0]
        .instructions
        .iter()
        .find_map(|(op, rest)| {
            let (k, v) = rest.split_once('=')?;
            (op == "ARG" && k == name).then(|| v.to_string())
        })
        .unwrap_or_else(|| panic!("ARG {name} has no default"))
}

fn docker_target(stages: &[Stage], name: &str) -> DockerTarget {
    let by_name = |n: &str| stages[1..].iter().find(|s| !n.is_empty() && s.name == n);
    let mut chain = vec![by_name(name).unwrap_or_else(|| panic!("no stage {name}"))];
    while let Some(parent) = by_name(&chain.last().unwrap().base) {
        chain.push(parent);
    }
    let mut t = DockerTarget {
        root: chain.last().unwrap().base.clone(),
        ..Default::default()
    };
    for (op, rest) in chain.iter().rev().flat_map(|s| &s.instructions) {
        let w = words(rest);
        match op.as_str() {
            "ARG" => {
                let (k, v) = match rest.split_once('=') {
                    Some((k, v)) => (k, v.to_string()),
                    None => (rest.as_str(), global_arg(stages, rest)),
                };
                t.args.insert(k.to_string(), v);
            }
            "LABEL" => {
                for kv in &w {
                    let (k, v) = kv.split_once('=').expect("LABEL key=value");
                    let v = t.args.iter().fold(v.to_string(), |v, (a, d)| {
                        v.replace(&format!("${{{a}}}"), d)
                    });
                    t.labels.insert(k.to_string(), v);
                }
            }
            "COPY" => {
                let from = w.iter().find_map(|x| x.strip_prefix("--from="));
                let dest = w.last().expect("COPY destination");
                t.sources
                    .insert((from.unwrap_or("").to_string(), w[w.len() - 2].clone()));
                t.files.insert(dest.trim_start_matches('/').to_string());
            }
            "USER" => t.user = rest.clone(),
            "EXPOSE" => t.exposed = w.into_iter().collect(),
            "ENTRYPOINT" => {
                t.entrypoint = serde_json::from_str(rest).expect("exec-form ENTRYPOINT")
            }
            _ => {}
        }
    }
    t
}

/// `docker build --target <component>` gives the archive's layout: FROM scratch, the same two
/// files, entrypoint, user, exposed port and labels (the ARG defaults are this checkout's
/// version, source and licence; revision and created are passed by `make docker-images`), and
/// its binaries come from `make image-bins`, the step `make images` runs.
#[test]
#[ignore = "needs `make images`; run by `make images-test`"]
fn dockerfile_targets_build_the_same_layout_as_the_archives() {
    let stages = dockerfile_stages();
    for c in COMPONENTS {
        let a = Archive::open(c);
        let img = a.native();
        let t = docker_target(&stages, c);
        assert_eq!(t.root, "scratch", "{c}: {t:?}");
        assert_eq!(t.entrypoint, img.config["config"]["Entrypoint"], "{c}");
        assert_eq!(
            t.user,
            img.config["config"]["User"].as_str().unwrap(),
            "{c}"
        );
        let exposed: BTreeSet<String> = img.config["config"]["ExposedPorts"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        assert_eq!(t.exposed, exposed, "{c}: EXPOSE");
        assert_eq!(t.files, img.files.keys().cloned().collect(), "{c}: files");
        let archive_labels: BTreeMap<String, String> = img.config["config"]["Labels"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with("org.opencontainers."))
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let keys = |m: &BTreeMap<String, String>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&t.labels), keys(&archive_labels), "{c}: label keys");
        for (k, v) in &archive_labels {
            if !k.ends_with(".revision") && !k.ends_with(".created") {
                assert_eq!(&t.labels[k], v, "{c}: label {k}");
            }
        }
        // the binary of the platform being built (`make image-bins` writes /out/<arch>/)
        let bin = (
            "build".to_string(),
            format!("/out/${{TARGETARCH}}/edgewatt-{c}"),
        );
        assert!(t.sources.contains(&bin), "{c}: binary from {bin:?}; {t:?}");
        assert_eq!(
            t.args.get("TARGETARCH").map(String::as_str),
            Some("${TARGETARCH}"),
            "{c}: the stage must declare ARG TARGETARCH for its COPY"
        );
    }
    let build = docker_target(&stages, "build");
    let build_stage = stages
        .iter()
        .find(|s| s.name == "build")
        .expect("stage build");
    assert!(
        build_stage.instructions.iter().any(|(op, rest)| op == "RUN"
            && rest.contains("make image-bins IMAGE_ARCHS=${TARGETARCH} IMAGE_BIN_OUT=/out")),
        "the build stage must run the `make image-bins` of `make images`, for the target platform"
    );
    assert!(
        build.args.contains_key("TARGETARCH"),
        "build: ARG TARGETARCH"
    );
    // it runs on the build machine and cross-compiles (as `make images` does), not emulated
    let source = stages
        .iter()
        .find(|s| s.name == build_stage.base)
        .expect("the build stage's base stage");
    assert_eq!(
        source.platform.as_deref(),
        Some("$BUILDPLATFORM"),
        "stage {}",
        source.name
    );
}

// ---- the release script (hack/release.sh): its rehearsals -------------------------------------

/// True when `name` is on PATH; says loudly what does not run without it.
fn have(name: &str, what: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()));
    if !found {
        eprintln!("SKIPPED: {what}: {name} missing (`make deps` installs it as root)");
    }
    found
}

/// The platforms `hack/release.sh` must find: a release needs amd64 and arm64; with `make
/// test`'s archives (this machine's only) the rehearsal first checks that the script refuses
/// them, then narrows RELEASE_PLATFORMS to what was built.
fn release_platforms() -> String {
    let built: Vec<String> = expected_archs()
        .iter()
        .map(|a| format!("linux/{a}"))
        .collect();
    if !expected_archs().contains("arm64") {
        let tmp = tempfile::tempdir().unwrap();
        let out = release_cmd(
            &[
                "--oci-dir",
                tmp.path().join("oci").to_str().unwrap(),
                "--out",
                tmp.path().join("out").to_str().unwrap(),
            ],
            None,
        )
        .output()
        .expect("hack/release.sh");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("a release needs") && err.contains("linux/arm64"),
            "a release of archives without arm64 must be refused: {}\n{err}",
            out.status
        );
    }
    built.join(" ")
}

/// `hack/release.sh --skip-build --skip-tests --no-sign …` on the archives the other tests read
/// (they are the tests the script would run).
fn release_cmd(args: &[&str], platforms: Option<&str>) -> Command {
    let mut cmd = Command::new(repo().join("hack/release.sh"));
    cmd.args(["--skip-build", "--skip-tests", "--no-sign"])
        .args(args)
        .env_remove("RELEASE_REGISTRY")
        .env_remove("RELEASE_REPOSITORY_PREFIX")
        .env_remove("RELEASE_USERNAME");
    match platforms {
        Some(p) => cmd.env("RELEASE_PLATFORMS", p),
        None => cmd.env_remove("RELEASE_PLATFORMS"),
    };
    cmd
}

/// What a rehearsal wrote into `out`, checked against the archives: `digests.txt` names each
/// reference with its index digest and each platform's manifest, `values-images.yaml` installs
/// the chart pinned to those digests, and the chart copy's values.yaml differs from the working
/// tree's in exactly the registry, repository and digest lines of the three image blocks.
fn check_release_record(out: &Path, registry: &str, archives: &[Archive]) {
    let version = chart_app_version();
    let digests = String::from_utf8(read(&out.join("digests.txt"))).unwrap();
    for a in archives {
        let c = a.component;
        let line = format!(
            "{registry}/edgewatt/edgewatt-{c}:{version}@{}",
            a.index_digest
        );
        assert!(
            digests.lines().any(|l| l == line),
            "{line} in digests.txt:\n{digests}"
        );
        for img in a.images.values() {
            let p = format!("  linux/{} {}", img.arch, img.manifest_digest);
            assert!(digests.lines().any(|l| l == p), "{p}:\n{digests}");
        }
    }
    assert!(digests.contains("# NOT SIGNED"), "{digests}");

    let values = chart::values_file(&out.join("values-images.yaml")).unwrap();
    let r = helm_install(values).expect("install with the release's values");
    for a in archives {
        let c = a.component;
        assert_eq!(
            r.image(&workload(c)),
            format!("{registry}/edgewatt/edgewatt-{c}@{}", a.index_digest),
            "{c}: pinned by the release's values"
        );
    }

    let original = String::from_utf8(read(&repo().join("charts/edgewatt/values.yaml"))).unwrap();
    let pinned = String::from_utf8(read(&out.join("edgewatt/values.yaml"))).unwrap();
    let (old, new): (Vec<&str>, Vec<&str>) = (original.lines().collect(), pinned.lines().collect());
    assert_eq!(
        old.len(),
        new.len(),
        "the pinned values.yaml keeps every line"
    );
    let changed: Vec<(&str, &str)> = old
        .iter()
        .zip(&new)
        .filter(|(o, n)| o != n)
        .map(|(o, n)| (*o, *n))
        .collect();
    let mut want = Vec::new();
    for a in archives {
        let c = a.component;
        want.push(format!("    registry: \"{registry}\""));
        want.push(format!("    repository: \"edgewatt/edgewatt-{c}\""));
        want.push(format!("    digest: \"{}\"", a.index_digest));
    }
    let got: Vec<String> = changed.iter().map(|(_, n)| n.to_string()).collect();
    assert_eq!(
        got.iter().collect::<BTreeSet<_>>(),
        want.iter().collect::<BTreeSet<_>>(),
        "exactly the image blocks' registry, repository and digest change: {changed:#?}"
    );
    assert_eq!(got.len(), want.len(), "{changed:#?}");
    let parsed: Value = serde_saphyr::from_str(&pinned).expect("pinned values.yaml");
    for a in archives {
        assert_eq!(parsed[a.component]["image"]["digest"], a.index_digest);
    }
    // the working tree's chart stays unpinned (`make images` builds keep working with it)
    let tree: Value = serde_saphyr::from_str(&original).unwrap();
    for c in COMPONENTS {
        assert_eq!(
            tree[c]["image"]["digest"], "",
            "{c}: charts/edgewatt pinned"
        );
    }
}

/// `hack/release.sh --oci-dir` (`make release-rehearsal`), offline: each tested index lands in
/// an OCI layout under its tag with the same digest (skopeo `--preserve-digests`), every
/// platform's manifest with it; the digests are recorded and pinned in a copy of the chart.
#[test]
#[ignore = "needs `make images`; run by `make images-test`"]
fn release_rehearsal_pushes_the_tested_indexes_to_oci_layouts_and_pins_the_chart() {
    if !have("skopeo", "the release rehearsal") {
        return;
    }
    let platforms = release_platforms();
    let archives: Vec<Archive> = COMPONENTS.into_iter().map(Archive::open).collect();
    let tmp = tempfile::tempdir().unwrap();
    let (oci, out) = (tmp.path().join("oci"), tmp.path().join("out"));
    run(&mut release_cmd(
        &[
            "--oci-dir",
            oci.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        Some(&platforms),
    ));
    let version = chart_app_version();
    for a in &archives {
        let layout = oci.join(format!("edgewatt-{}", a.component));
        let top = json_file(&layout.join("index.json"));
        let entry = top["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == version.as_str())
            .unwrap_or_else(|| panic!("{}: no {version} in {top}", a.component));
        assert_eq!(entry["digest"], a.index_digest.as_str(), "{}", a.component);
        assert_eq!(entry["mediaType"], INDEX);
        let index = blob_json(&layout, entry);
        for m in index["manifests"].as_array().unwrap() {
            let arch = m["platform"]["architecture"].as_str().unwrap();
            assert_eq!(m["digest"], a.image(arch).manifest_digest.as_str());
            let manifest = blob_json(&layout, m);
            blob_json(&layout, &manifest["config"]);
            for layer in manifest["layers"].as_array().unwrap() {
                checked_blob(&layout, layer);
            }
        }
    }
    check_release_record(&out, "ghcr.io", &archives);
}

/// A Docker distribution registry (Debian `docker-registry`) on a loopback port, storing under
/// a temporary directory; stopped on drop.
struct LocalRegistry {
    child: std::process::Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl LocalRegistry {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", edgewatt_e2e::free_port());
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry serve");
        let mut r = Self {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::blocking::get(format!("http://{}/v2/", r.addr))
            .map(|resp| !resp.status().is_success())
            .unwrap_or(true)
        {
            assert!(
                Instant::now() < deadline,
                "the local registry never answered /v2/"
            );
            if let Ok(Some(status)) = r.child.try_wait() {
                panic!("docker-registry exited: {status}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        r
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `hack/release.sh --registry <local registry> --insecure`: the registry path of a release
/// (skopeo's docker transport, OCI image index and both platforms' manifests), offline. The
/// registry serves each tag under the tested index digest and each platform's manifest by its
/// digest; the values pin that registry.
#[test]
#[ignore = "needs `make images`; run by `make images-test`"]
fn release_rehearsal_against_a_local_registry_serves_the_tested_digests() {
    if !have("skopeo", "the release rehearsal")
        || !have("docker-registry", "the local registry rehearsal")
    {
        return;
    }
    edgewatt_e2e::install_crypto_provider();
    let platforms = release_platforms();
    let archives: Vec<Archive> = COMPONENTS.into_iter().map(Archive::open).collect();
    let registry = LocalRegistry::start();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    run(&mut release_cmd(
        &[
            "--registry",
            &registry.addr,
            "--insecure",
            "--out",
            out.to_str().unwrap(),
        ],
        Some(&platforms),
    ));
    let version = chart_app_version();
    let raw = |reference: &str| {
        let out = run(Command::new("skopeo").args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}/{reference}", registry.addr),
        ]));
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), &out.stdout).unwrap();
        (
            format!("sha256:{}", sha256(tmp.path())),
            serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        )
    };
    for a in &archives {
        let repository = format!("edgewatt/edgewatt-{}", a.component);
        let (digest, index) = raw(&format!("{repository}:{version}"));
        assert_eq!(digest, a.index_digest, "{}: served index", a.component);
        assert_eq!(index["mediaType"], INDEX);
        for img in a.images.values() {
            let (d, manifest) = raw(&format!("{repository}@{}", img.manifest_digest));
            assert_eq!(d, img.manifest_digest, "{} {}", a.component, img.arch);
            assert_eq!(manifest["mediaType"], MANIFEST);
        }
    }
    check_release_record(&out, &registry.addr, &archives);
}
