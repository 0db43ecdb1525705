//! Log capture: every line of a step is masked (each secret value becomes `**************`), time-stamped,
//! shown to the observer as it comes, and written to the store in chunks so a step that prints a gigabyte
//! is stored as a few thousand rows rather than millions.

use crate::{Event, Observer};
use std::sync::{Arc, Mutex};
use store::{Store, now_ms};

/// The mask that replaces secret values.
pub const MASK: &str = "**************";

/// Replaces known secret values in text.
#[derive(Debug, Default)]
pub struct Masker {
    secrets: Mutex<Vec<String>>,
}

impl Masker {
    /// Start masking `value` (values shorter than 3 characters are not masked: they would hide everything).
    pub fn add(&self, value: &str) {
        let mut s = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        for v in std::iter::once(value).chain(value.lines()) {
            let v = v.trim_end_matches('\r');
            if v.len() >= 3 && !s.iter().any(|x| x == v) {
                s.push(v.to_string());
                // Longest first, so a secret containing another is masked whole.
                s.sort_by_key(|x| std::cmp::Reverse(x.len()));
            }
        }
    }

    /// The secret values found in any of `texts` (what a task carries, for an executor to mask).
    pub fn found_in(&self, texts: &[&str]) -> Vec<String> {
        let s = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        s.iter().filter(|v| texts.iter().any(|t| t.contains(v.as_str()))).cloned().collect()
    }

    /// Whether `text` holds a secret value (no allocation: for the common case of nothing to mask).
    pub fn holds_secret(&self, text: &str) -> bool {
        self.secrets.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|v| text.contains(v.as_str()))
    }

    /// Whether any string of a JSON value holds a secret value.
    pub fn json_holds_secret(&self, v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => self.holds_secret(s),
            serde_json::Value::Array(a) => a.iter().any(|x| self.json_holds_secret(x)),
            serde_json::Value::Object(o) => o.values().any(|x| self.json_holds_secret(x)),
            _ => false,
        }
    }

    /// Mask every secret in every string of a JSON value (output variables, stage variables).
    pub fn mask_json(&self, v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) => {
                let m = self.mask(s);
                if m != *s {
                    *s = m;
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| self.mask_json(x)),
            serde_json::Value::Object(o) => o.values_mut().for_each(|x| self.mask_json(x)),
            _ => {}
        }
    }

    /// Mask every secret in `text`.
    pub fn mask(&self, text: &str) -> String {
        let s = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = text.to_string();
        for v in s.iter() {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), MASK);
            }
        }
        out
    }
}

const CHUNK_BYTES: usize = 256 * 1024;

/// The longest log line kept whole, bytes; longer ones are split into lines of this length.
pub const MAX_LINE: usize = 64 * 1024;

/// Lines are stored at the latest this long after they were written (for `logs --follow`).
pub(crate) const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

struct Buf {
    text: String,
    seq: i64,
    since: std::time::Instant,
}

/// The log of one node.
pub struct LogSink {
    /// Where lines are stored (none: the execution's own lines, shown but belonging to no node).
    store: Option<Arc<dyn Store>>,
    observer: Arc<dyn Observer>,
    masker: Arc<Masker>,
    execution_id: String,
    node_id: String,
    path: String,
    buf: tokio::sync::Mutex<Buf>,
}

impl LogSink {
    /// A sink for a node.
    pub fn new(
        store: Arc<dyn Store>,
        observer: Arc<dyn Observer>,
        masker: Arc<Masker>,
        execution_id: &str,
        node_id: &str,
        path: &str,
    ) -> Self {
        LogSink {
            store: Some(store),
            observer,
            masker,
            execution_id: execution_id.to_string(),
            node_id: node_id.to_string(),
            path: path.to_string(),
            buf: tokio::sync::Mutex::new(Buf { text: String::new(), seq: 0, since: std::time::Instant::now() }),
        }
    }

    /// Lines of the execution itself (the pipeline asking for its runtime inputs): shown, not stored — a log
    /// chunk belongs to a node, and what the execution waits for is recorded in its inputs.
    pub fn shown_only(observer: Arc<dyn Observer>, masker: Arc<Masker>, path: &str) -> Self {
        LogSink {
            store: None,
            observer,
            masker,
            execution_id: String::new(),
            node_id: String::new(),
            path: path.to_string(),
            buf: tokio::sync::Mutex::new(Buf { text: String::new(), seq: 0, since: std::time::Instant::now() }),
        }
    }

    /// Number this sink's chunks after `seq` (a node taken over, or one that asked for inputs, already has
    /// chunks up to it); never lower than where it starts already.
    pub fn after(self, seq: i64) -> Self {
        if let Ok(mut b) = self.buf.try_lock() {
            b.seq = b.seq.max(seq);
        }
        self
    }

    /// The number of the last chunk written.
    pub async fn seq(&self) -> i64 {
        self.buf.lock().await.seq
    }

    /// Record one line.
    pub async fn line(&self, stream: &'static str, text: &str) {
        let masked = self.masker.mask(text.trim_end_matches(['\n', '\r']));
        self.observer.event(&Event::Log { path: self.path.clone(), stream, line: masked.clone() });
        let mut b = self.buf.lock().await;
        b.text.push_str(&format!("{}\t{stream}\t{masked}\n", now_ms()));
        if b.text.len() >= CHUNK_BYTES || b.since.elapsed() >= FLUSH_EVERY {
            self.flush_locked(&mut b).await;
        }
    }

    /// Write what is buffered.
    pub async fn flush(&self) {
        let mut b = self.buf.lock().await;
        self.flush_locked(&mut b).await;
    }

    /// Write what is buffered unless a writer holds the buffer (it flushes on its own). Never waits for the
    /// buffer: the caller may be holding up the very future that holds it.
    pub async fn flush_if_idle(&self) {
        if let Ok(mut b) = self.buf.try_lock() {
            self.flush_locked(&mut b).await;
        }
    }

    async fn flush_locked(&self, b: &mut Buf) {
        if b.text.is_empty() {
            return;
        }
        let data = std::mem::take(&mut b.text);
        b.since = std::time::Instant::now();
        let Some(store) = &self.store else { return };
        b.seq += 1;
        if let Err(e) = store.append_log(&self.execution_id, &self.node_id, b.seq, &data).await {
            // The step goes on; the observer still saw the lines.
            self.observer.event(&Event::Log {
                path: self.path.clone(),
                stream: "pipewright",
                line: format!("could not store log lines: {e}"),
            });
        }
    }
}
