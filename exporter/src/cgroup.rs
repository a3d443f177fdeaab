//! Which container and pod a process belongs to, from its cgroup path alone — so attribution works
//! without any runtime socket, for containerd, CRI-O, Docker and Podman, with the systemd and the
//! cgroupfs drivers, on cgroup v1 and v2.

/// Container runtime, as the cgroup path names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
    Podman,
    /// A bare 64-hex directory (cgroupfs driver): the runtime does not say.
    Unknown,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
            Runtime::Unknown => "unknown",
        }
    }
}

/// What a cgroup path tells about a process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Workload {
    /// 64-hex container id, when the process runs in a container.
    pub container_id: Option<String>,
    pub runtime: Option<Runtime>,
    /// Pod UID (dashed form), when the container belongs to a Kubernetes pod.
    pub pod_uid: Option<String>,
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Container id and runtime from one path component, if it names a container.
fn container_of(component: &str) -> Option<(String, Runtime)> {
    let base = component.strip_suffix(".scope").unwrap_or(component);
    const PREFIXES: [(&str, Runtime); 6] = [
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("docker-", Runtime::Docker),
        ("libpod-", Runtime::Podman),
        ("containerd-", Runtime::Containerd),
        ("", Runtime::Unknown),
    ];
    for (prefix, rt) in PREFIXES {
        if let Some(id) = base.strip_prefix(prefix) {
            if is_container_id(id) {
                return Some((id.to_string(), rt));
            }
        }
    }
    None
}

/// Pod UID from `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid_with_underscores>.slice`.
/// API pods have a dashed 36-character UUID; static pods the kubelet reads from manifest files
/// have the hex md5 of their manifest, 32 digits without dashes (kubernetes/kubernetes
/// `pkg/kubelet/config/common.go` `applyDefaults`), which their mirror pod carries in the
/// `kubernetes.io/config.mirror` annotation (see `pods.rs`).
fn pod_of(component: &str) -> Option<String> {
    let base = component.strip_suffix(".slice").unwrap_or(component);
    let at = base.rfind("pod")?;
    if at > 0 && !base[..at].ends_with('-') {
        return None;
    }
    let uid = base[at + 3..].replace('_', "-");
    let dashed = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| {
            matches!(i, 8 | 13 | 18 | 23) == (b == b'-') && (b == b'-' || b.is_ascii_hexdigit())
        });
    let static_pod = uid.len() == 32 && uid.bytes().all(|b| b.is_ascii_hexdigit());
    (dashed || static_pod).then_some(uid)
}

/// Parses one cgroup path (the part after `0::` or after `N:cpu,cpuacct:`).
pub fn parse_path(path: &str) -> Workload {
    let mut w = Workload::default();
    for component in path.split('/') {
        // conmon and the pause container's parent live next to the container: pod, no container.
        if let Some((id, rt)) = container_of(component) {
            w.container_id = Some(id);
            w.runtime = Some(rt);
        } else if let Some(uid) = pod_of(component) {
            w.pod_uid = Some(uid);
        }
    }
    w
}

/// Picks the path that places a process from `/proc/<pid>/cgroup`: the v2 unified line (`0::`),
/// or on v1 the `cpu`/`cpuacct` hierarchy (which is what CPU time is charged to).
pub fn select_path(proc_cgroup: &str) -> &str {
    let (mut unified, mut cpuacct) = ("", None);
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        // `cpu` (alone or as `cpu,cpuacct`) is where CPU time is charged; a separately mounted
        // `cpuacct` only if there is no `cpu` line.
        if controllers.split(',').any(|c| c == "cpu") {
            return path;
        }
        if controllers.split(',').any(|c| c == "cpuacct") {
            cpuacct = Some(path);
        }
        if controllers.is_empty() {
            unified = path;
        }
    }
    cpuacct.unwrap_or(unified)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4a7c53d1e2b6f8a09d3c5e7f1a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e2f4a6b";
    const UID: &str = "0f9a7c1e-3b2d-4e5f-8a9b-1c2d3e4f5a6b";

    /// Real-world shapes, one per runtime/driver/cgroup-version combination we support.
    #[test]
    fn real_world_paths() {
        let uid_us = UID.replace('-', "_");
        let cases: Vec<(String, Option<Runtime>, bool)> = vec![
            // containerd, systemd driver, v2 (kubeadm default)
            (format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_us}.slice/cri-containerd-{ID}.scope"), Some(Runtime::Containerd), true),
            // guaranteed QoS has no QoS slice
            (format!("/kubepods.slice/kubepods-pod{uid_us}.slice/cri-containerd-{ID}.scope"), Some(Runtime::Containerd), true),
            // CRI-O, systemd driver (OpenShift)
            (format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_us}.slice/crio-{ID}.scope"), Some(Runtime::CriO), true),
            // cgroupfs driver (k3s, kind), v1 or v2
            (format!("/kubepods/burstable/pod{UID}/{ID}"), Some(Runtime::Unknown), true),
            (format!("/kubepods/pod{UID}/{ID}"), Some(Runtime::Unknown), true),
            // kind nests the node's kubelet slice
            (format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{uid_us}.slice/cri-containerd-{ID}.scope"), Some(Runtime::Containerd), true),
            // Docker, systemd and cgroupfs drivers
            (format!("/system.slice/docker-{ID}.scope"), Some(Runtime::Docker), false),
            (format!("/docker/{ID}"), Some(Runtime::Unknown), false),
            // Podman rootful and rootless
            (format!("/machine.slice/libpod-{ID}.scope"), Some(Runtime::Podman), false),
            (format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"), Some(Runtime::Podman), false),
            // plain host processes
            ("/system.slice/sshd.service".to_string(), None, false),
            ("/user.slice/user-0.slice/session-3.scope".to_string(), None, false),
            ("/".to_string(), None, false),
        ];
        for (path, rt, has_pod) in cases {
            let w = parse_path(&path);
            assert_eq!(w.runtime, rt, "{path}");
            assert_eq!(w.container_id.is_some(), rt.is_some(), "{path}");
            if rt.is_some() {
                assert_eq!(w.container_id.as_deref(), Some(ID), "{path}");
            }
            assert_eq!(w.pod_uid.as_deref(), has_pod.then_some(UID), "{path}");
        }
    }

    /// Static pods (kube-apiserver, etcd on kubeadm control planes) are named by their manifest
    /// hash: 32 hex digits, no dashes, in both cgroup drivers' paths.
    #[test]
    fn static_pod_uids() {
        let hash = "3b1c9a8e5d7f4e2a9c0b1d2e3f4a5b6c";
        for path in [
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{hash}.slice/cri-containerd-{ID}.scope"),
            format!("/kubepods/burstable/pod{hash}/{ID}"),
            format!("/kubepods.slice/kubepods-pod{hash}.slice"),
        ] {
            assert_eq!(parse_path(&path).pod_uid.as_deref(), Some(hash), "{path}");
        }
        // neither 31 nor 33 digits, nor non-hex
        for bad in [
            "3b1c9a8e5d7f4e2a9c0b1d2e3f4a5b6",
            "3b1c9a8e5d7f4e2a9c0b1d2e3f4a5b6c7",
            "3b1c9a8e5d7f4e2a9c0b1d2e3f4a5bzz",
        ] {
            assert_eq!(
                parse_path(&format!("/kubepods/pod{bad}/{ID}")).pod_uid,
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn conmon_belongs_to_no_container() {
        let w = parse_path(&format!("/machine.slice/libpod-conmon-{ID}.scope"));
        assert_eq!(w.container_id, None);
    }

    #[test]
    fn selects_v2_or_v1_cpu_line() {
        assert_eq!(
            select_path("0::/system.slice/x.service\n"),
            "/system.slice/x.service"
        );
        let v1 = "12:pids:/a\n4:cpu,cpuacct:/kubepods/pod1/abc\n1:name=systemd:/b\n0::/c\n";
        assert_eq!(select_path(v1), "/kubepods/pod1/abc");
        assert_eq!(select_path("garbage"), "");
        // separately mounted cpu and cpuacct (this VM): the cpu line wins, whatever the order
        assert_eq!(
            select_path("2:cpuacct:/\n1:cpu:/kubepods/pod1/abc\n0::/\n"),
            "/kubepods/pod1/abc"
        );
        assert_eq!(select_path("2:cpuacct:/x\n0::/y\n"), "/x");
    }
}
