//! Names of containers outside Kubernetes, from the container runtime's own state on disk (no
//! socket, no API client): Docker's `/var/lib/docker/containers/<id>/config.v2.json` (`"Name":
//! "/web"`, moby `daemon/container`), Podman's `/var/lib/containers/storage/overlay-containers/
//! containers.json` (`[{"id", "names": [..]}]`, containers/storage `containers.go`). Both are
//! root-only on most hosts; without them `top` shows the 12-digit short id, as `docker ps` does.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::sysfs::HostRoot;

/// Looks each id up once; the answer (a name or none) is kept while `top` runs.
pub struct RuntimeNames {
    root: HostRoot,
    cache: RefCell<HashMap<String, Option<String>>>,
}

impl RuntimeNames {
    pub fn new(root: HostRoot) -> Self {
        Self {
            root,
            cache: RefCell::new(HashMap::new()),
        }
    }

    pub fn name(&self, id: &str) -> Option<String> {
        if let Some(hit) = self.cache.borrow().get(id) {
            return hit.clone();
        }
        let found = self.docker(id).or_else(|| self.podman(id));
        self.cache
            .borrow_mut()
            .insert(id.to_string(), found.clone());
        found
    }

    fn docker(&self, id: &str) -> Option<String> {
        // The id comes from a cgroup path (64 hex digits), never a path of its own.
        if !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let path = self
            .root
            .path(format!("/var/lib/docker/containers/{id}/config.v2.json"));
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        let name = v.get("Name")?.as_str()?.trim_start_matches('/');
        (!name.is_empty()).then(|| name.to_string())
    }

    fn podman(&self, id: &str) -> Option<String> {
        let path = self
            .root
            .path("/var/lib/containers/storage/overlay-containers/containers.json");
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        let c = v
            .as_array()?
            .iter()
            .find(|c| c.get("id").and_then(|i| i.as_str()) == Some(id))?;
        let name = c.get("names")?.as_array()?.first()?.as_str()?;
        Some(name.to_string())
    }
}
