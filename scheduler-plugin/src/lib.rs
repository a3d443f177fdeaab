//! kube-scheduler extender that filters and scores nodes by power headroom
