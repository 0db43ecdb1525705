//! The accept loop: HTTP/1.1 connections served by hyper with a bound on everything a client can hold open —
//! a deadline for each request head (slow headers and idle keep-alives are cut off), caps on open connections
//! per client address and in total where, at a cap, the oldest connection that never sent a request head
//! makes room (so a flood of silent connections cannot keep out a client that talks), and graceful shutdown
//! (stop accepting, let requests in flight finish). The file-descriptor limit is raised to what the system
//! allows so the caps, not the kernel, decide. Also the counted [`Slots`] other bounds use.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
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

/// One open connection, as the admission policy sees it.
struct Conn {
    ip: IpAddr,
    /// It has sent a complete request head (a slow or silent client never does).
    served: AtomicBool,
    /// It is closed, or was chosen to be.
    closed: AtomicBool,
    kill: Notify,
}

/// Open connections in the order they were accepted, and the decision who may connect.
#[derive(Default)]
struct Admission {
    conns: Mutex<Vec<Arc<Conn>>>,
}

/// What to do with a new connection.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Serve it.
    Admit,
    /// Serve it after closing the connection at this index (the oldest one that never sent a request head).
    AdmitEvicting(usize),
    /// Close it: the caps are reached and every connection is busy with requests.
    Refuse,
}

/// The admission decision: within the caps, admit; at a cap, make room by closing the oldest connection that
/// has not sent a request head (from the same address when the per-address cap is what is reached), so slow
/// or silent clients can never keep out one that talks; refuse only when nothing can be closed.
fn admit(open: &[(IpAddr, bool)], ip: IpAddr, limits: &Limits) -> Verdict {
    let mine = open.iter().filter(|(a, _)| *a == ip).count();
    let idle = |same_ip: bool| open.iter().position(|(a, served)| !served && (!same_ip || *a == ip));
    if mine >= limits.max_connections_per_ip {
        return idle(true).map_or(Verdict::Refuse, Verdict::AdmitEvicting);
    }
    if open.len() >= limits.max_connections {
        return idle(false).map_or(Verdict::Refuse, Verdict::AdmitEvicting);
    }
    Verdict::Admit
}

impl Admission {
    fn enter(&self, ip: IpAddr, limits: &Limits) -> Option<Arc<Conn>> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|c| !c.closed.load(Ordering::SeqCst));
        let open: Vec<(IpAddr, bool)> = conns.iter().map(|c| (c.ip, c.served.load(Ordering::SeqCst))).collect();
        match admit(&open, ip, limits) {
            Verdict::Refuse => return None,
            Verdict::AdmitEvicting(i) => {
                let old = conns.remove(i);
                old.closed.store(true, Ordering::SeqCst);
                old.kill.notify_one();
            }
            Verdict::Admit => {}
        }
        let c =
            Arc::new(Conn { ip, served: AtomicBool::new(false), closed: AtomicBool::new(false), kill: Notify::new() });
        conns.push(c.clone());
        Some(c)
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
    let admission = Arc::new(Admission::default());
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    tokio::pin!(shutdown);
    loop {
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
        let Some(conn_state) = admission.enter(addr.ip(), &limits) else {
            drop(stream); // At the caps, and every connection is busy with requests.
            continue;
        };
        let _ = stream.set_nodelay(true);
        let seen = conn_state.clone();
        let svc = router.clone().map_request(move |req: hyper::Request<hyper::body::Incoming>| {
            seen.served.store(true, Ordering::SeqCst);
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(addr));
            req
        });
        let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            tokio::select! {
                _ = conn => {}
                _ = conn_state.kill.notified() => {}
            }
            conn_state.closed.store(true, Ordering::SeqCst);
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

    #[test]
    fn admission_makes_room_by_closing_silent_connections_first() {
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let limits = Limits { header_timeout: Duration::from_secs(1), max_connections: 4, max_connections_per_ip: 2 };
        type Case<'a> = (&'a [(IpAddr, bool)], IpAddr, Verdict);
        let cases: &[Case] = &[
            (&[], a, Verdict::Admit),
            (&[(a, true)], a, Verdict::Admit),
            // Per address: the oldest silent connection of that address makes room.
            (&[(a, true), (a, false)], a, Verdict::AdmitEvicting(1)),
            (&[(b, false), (a, false), (a, false)], a, Verdict::AdmitEvicting(1)),
            // Every connection of the address is busy: refused.
            (&[(a, true), (a, true)], a, Verdict::Refuse),
            // In total: the oldest silent connection of any address.
            (&[(a, true), (b, false), (b, true), (a, true)], "10.0.0.3".parse().unwrap(), Verdict::AdmitEvicting(1)),
            (&[(a, true), (b, true), (b, true), (a, true)], "10.0.0.3".parse().unwrap(), Verdict::Refuse),
        ];
        for (open, ip, want) in cases {
            assert_eq!(admit(open, *ip, &limits), *want, "{open:?} + {ip}");
        }
    }
}
