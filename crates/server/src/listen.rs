//! The accept loop: HTTP/1.1 connections served by hyper with a bound on everything a client can hold open —
//! a deadline for the request head (slow headers are cut off), a cap on open connections per client address
//! and in total (the rest wait in the kernel's backlog, so one address cannot take every slot), and graceful
//! shutdown (stop accepting, let requests in flight finish). The file-descriptor limit is raised to what the
//! system allows so the caps, not the kernel, decide.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Bounds on connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest a client may take to send a request head.
    pub header_timeout: Duration,
    /// Open connections in total.
    pub max_connections: usize,
    /// Open connections per client address.
    pub max_connections_per_ip: usize,
}

/// Counted slots per key (a client address, a principal) with a cap per key and in total: a slot is taken
/// or refused at once, and given back when its guard drops.
pub struct Slots<K: std::hash::Hash + Eq + Clone> {
    map: Mutex<(HashMap<K, usize>, usize)>,
    per_key: usize,
    total: usize,
}

/// A taken slot.
pub struct Slot<K: std::hash::Hash + Eq + Clone> {
    slots: Arc<Slots<K>>,
    key: K,
}

impl<K: std::hash::Hash + Eq + Clone> Slots<K> {
    /// Slots with these caps.
    pub fn new(per_key: usize, total: usize) -> Arc<Self> {
        Arc::new(Slots { map: Mutex::new((HashMap::new(), 0)), per_key, total })
    }

    /// Take a slot for `key`, unless the key or the total is at its cap.
    pub fn take(self: &Arc<Self>, key: K) -> Option<Slot<K>> {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let (per, total) = &mut *m;
        let n = per.get(&key).copied().unwrap_or(0);
        if n >= self.per_key || *total >= self.total {
            return None;
        }
        per.insert(key.clone(), n + 1);
        *total += 1;
        Some(Slot { slots: self.clone(), key })
    }
}

impl<K: std::hash::Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut m = self.slots.map.lock().unwrap_or_else(|e| e.into_inner());
        let (per, total) = &mut *m;
        *total = total.saturating_sub(1);
        if let Some(n) = per.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.key);
            }
        }
    }
}

/// Raise the soft limit on open files to the hard limit.
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Serve `router` on `listener` until `shutdown` resolves; then stop accepting and wait for requests in flight.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    raise_fd_limit();
    let total = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_ip = Slots::new(limits.max_connections_per_ip, usize::MAX);
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    tokio::pin!(shutdown);
    loop {
        // A free slot first, then a connection: beyond the cap, clients wait in the backlog.
        let permit = tokio::select! {
            p = total.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = &mut shutdown => break,
        };
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors or a connection reset before it was accepted: keep serving.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some(slot) = per_ip.take(addr.ip()) else {
            drop(stream); // This address holds too many connections already.
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = router.clone().map_request(move |req: hyper::Request<hyper::body::Incoming>| {
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(addr));
            req
        });
        let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop((permit, slot));
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_key_and_in_total_and_given_back() {
        let s = Slots::new(2, 3);
        let a1 = s.take("a").unwrap();
        let _a2 = s.take("a").unwrap();
        assert!(s.take("a").is_none(), "per key");
        let _b1 = s.take("b").unwrap();
        assert!(s.take("c").is_none(), "in total");
        drop(a1);
        let _c = s.take("c").unwrap();
        assert!(s.take("a").is_none(), "the total again");
    }
}
