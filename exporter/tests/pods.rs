//! Pod names through a real `kube` watch against the API server double, filtered by node.

use std::time::Duration;

use edgewatt_e2e::apiserver::ApiServer;
use edgewatt_exporter::pods::{watch, PodDirectory};
use serde_json::json;

fn pod(name: &str, uid: &str, node: &str, container_id: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": uid},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "x"}]},
        "status": {"containerStatuses": [{"name": "app", "containerID": format!("containerd://{container_id}"), "image": "x", "imageID": "", "ready": true, "restartCount": 0}]}
    })
}

#[tokio::test]
async fn watches_only_this_nodes_pods() {
    let api = ApiServer::start().await.unwrap();
    api.put(pod("a", "uid-a", "edge-1", "aaaa")).unwrap();
    api.put(pod("b", "uid-b", "edge-2", "bbbb")).unwrap();
    let dir = PodDirectory::default();
    tokio::spawn(watch(api.client().unwrap(), "edge-1".into(), dir.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while dir.get("uid-a").is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pod a never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = dir.get("uid-a").unwrap();
    assert_eq!((a.name.as_str(), a.namespace.as_str()), ("a", "shop"));
    assert_eq!(a.containers.get("aaaa").map(String::as_str), Some("app"));
    assert!(
        dir.get("uid-b").is_none(),
        "other nodes' pods are filtered out by the field selector"
    );
    // a new pod on this node arrives by watch, a deleted one leaves
    api.put(pod("c", "uid-c", "edge-1", "cccc")).unwrap();
    api.remove("pods", Some("shop"), "a");
    while dir.get("uid-c").is_none() || dir.get("uid-a").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "watch events not applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Static pods (kube-apiserver, etcd on kubeadm control planes) run in cgroups named after their
/// manifest hash, not after their mirror pod's API UID; the mirror pod carries the hash in
/// `kubernetes.io/config.mirror` (kubernetes/kubernetes `pkg/kubelet/types/pod_update.go`), so the
/// directory knows the pod by both.
#[tokio::test]
async fn static_pods_are_known_by_their_manifest_hash() {
    let api = ApiServer::start().await.unwrap();
    let hash = "3b1c9a8e5d7f4e2a9c0b1d2e3f4a5b6c";
    let mut mirror = pod(
        "kube-apiserver-edge-1",
        "8f0e6d2c-aaaa-4bbb-8ccc-0123456789ab",
        "edge-1",
        "dddd",
    );
    mirror["metadata"]["namespace"] = "kube-system".into();
    mirror["metadata"]["annotations"] = json!({
        "kubernetes.io/config.mirror": hash,
        "kubernetes.io/config.hash": hash,
        "kubernetes.io/config.source": "file"
    });
    api.put(mirror).unwrap();
    let dir = PodDirectory::default();
    let generation = dir.generation();
    tokio::spawn(watch(api.client().unwrap(), "edge-1".into(), dir.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while dir.get(hash).is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "static pod never named"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let by_hash = dir.get(hash).unwrap();
    assert_eq!(
        (by_hash.name.as_str(), by_hash.namespace.as_str()),
        ("kube-apiserver-edge-1", "kube-system")
    );
    assert_eq!(
        dir.get("8f0e6d2c-aaaa-4bbb-8ccc-0123456789ab"),
        Some(by_hash)
    );
    assert!(
        dir.generation() > generation,
        "changes move the generation on"
    );
    // the mirror pod goes: both entries go
    api.remove("pods", Some("kube-system"), "kube-apiserver-edge-1");
    while dir.get(hash).is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "static pod never removed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
