//! Log capture: every line of a step is masked (each secret value becomes `**************`), time-stamped,
//! shown to the observer as it comes, and written to the store in chunks so a step that prints a gigabyte
//! is stored as a few thousand rows rather than millions.

use crate::{Event, Observer};
use aho_corasick::{AhoCorasick, MatchKind};
use std::sync::{Arc, Mutex};
use store::{Store, now_ms};

/// The mask that replaces secret values.
pub const MASK: &str = "**************";

/// Replaces known secret values in text, in the spellings a step can print them in without meaning to: the
/// value itself in any ASCII case (and upper- or lower-cased whole), its hexadecimal, its URL encodings, and
/// its base64 and base64url, also where the encoded value sits inside a longer encoded text (the characters
/// that depend only on the secret, at each of the three byte alignments). A value transformed some other way
/// before it is printed is not recognised (an accepted risk, in SECURITY.md).
#[derive(Debug, Default)]
pub struct Masker {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The values as given (what an executor is handed to mask).
    secrets: Vec<String>,
    /// Matched in any ASCII case: the value, its hex, its URL encodings.
    folded: Vec<String>,
    /// Matched exactly: base64 forms, non-ASCII case forms.
    exact: Vec<String>,
    /// Both pattern sets as one automaton each (leftmost-longest, so a secret containing another is masked whole).
    automata: Option<(AhoCorasick, AhoCorasick)>,
}

/// The shortest value masked: shorter ones would hide everything.
const MIN_SECRET: usize = 3;
/// The shortest encoded form masked on its own (a shorter run of base64 characters is too common to hide).
const MIN_ENCODED: usize = 6;

/// The spellings of `value` the mask catches: (matched in any ASCII case, matched exactly).
fn spellings(value: &str) -> (Vec<String>, Vec<String>) {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let bytes = value.as_bytes();
    let mut folded = vec![value.to_string(), bytes.iter().map(|b| format!("{b:02x}")).collect()];
    for set in [percent_encoding::NON_ALPHANUMERIC, URL_COMPONENT, URL_PATH] {
        folded.push(percent_encoding::utf8_percent_encode(value, set).to_string());
    }
    // Every byte percent-encoded.
    folded.push(bytes.iter().map(|b| format!("%{b:02x}")).collect());
    folded.push(form_urlencoded::byte_serialize(bytes).collect());
    let mut exact = vec![value.to_uppercase(), value.to_lowercase()];
    for engine in [&STANDARD, &URL_SAFE] {
        let enc = engine.encode(bytes);
        // `base64` wraps its output at 76 columns: each line of the wrapped text is masked on its own.
        if enc.len() > 76 {
            let lines = enc.as_bytes().chunks(76).filter(|c| c.len() >= MIN_ENCODED);
            exact.extend(lines.map(|c| String::from_utf8_lossy(c).into_owned()));
        }
        exact.push(enc);
    }
    // Inside a longer encoded text the value starts at one of three alignments; keep the characters that
    // only its own bits decide (character i holds bits 6i..6i+6).
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for k in 0..3usize {
            let mut padded = vec![0u8; k];
            padded.extend_from_slice(bytes);
            let enc = engine.encode(&padded);
            let (from, to) = ((8 * k).div_ceil(6), 8 * (k + bytes.len()) / 6);
            if to > from && to - from >= MIN_ENCODED {
                exact.push(enc[from..to].to_string());
            }
        }
    }
    folded.retain(|v| v.len() >= MIN_SECRET);
    exact.retain(|v| v.len() >= MIN_SECRET && !folded.iter().any(|f| f.eq_ignore_ascii_case(v)));
    (folded, exact)
}

/// What Python's `urllib.parse.quote` leaves alone by default: letters, digits, `-_.~` and `/`.
const URL_PATH: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');

/// What `encodeURIComponent` leaves alone: letters, digits and `-_.!~*'()`.
const URL_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

impl Inner {
    fn automata(&mut self) -> Option<&(AhoCorasick, AhoCorasick)> {
        if self.automata.is_none() && !self.secrets.is_empty() {
            let build = |pats: &[String], fold: bool| {
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .ascii_case_insensitive(fold)
                    .build(pats)
                    .expect("secret patterns are plain strings")
            };
            self.automata = Some((build(&self.folded, true), build(&self.exact, false)));
        }
        self.automata.as_ref()
    }
}

impl Masker {
    /// Start masking `value` and each of its lines (values shorter than 3 bytes are not masked: they would
    /// hide everything).
    pub fn add(&self, value: &str) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for v in std::iter::once(value).chain(value.lines()) {
            let v = v.trim_end_matches('\r');
            if v.len() >= MIN_SECRET && !s.secrets.iter().any(|x| x == v) {
                s.secrets.push(v.to_string());
                let (folded, exact) = spellings(v);
                for f in folded {
                    if !s.folded.contains(&f) {
                        s.folded.push(f);
                    }
                }
                for e in exact {
                    if !s.exact.contains(&e) {
                        s.exact.push(e);
                    }
                }
                s.automata = None;
            }
        }
    }

    /// The secret values found in any of `texts` (what a task carries, for an executor to mask).
    pub fn found_in(&self, texts: &[&str]) -> Vec<String> {
        let s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.secrets.iter().filter(|v| texts.iter().any(|t| t.contains(v.as_str()))).cloned().collect()
    }

    /// Whether `text` holds a secret value in any spelling the mask catches.
    pub fn holds_secret(&self, text: &str) -> bool {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.automata().is_some_and(|(folded, exact)| folded.is_match(text) || exact.is_match(text))
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

    /// Mask every secret in `text`, in every spelling the mask catches.
    pub fn mask(&self, text: &str) -> String {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some((folded, exact)) = s.automata() else { return text.to_string() };
        let once = |ac: &AhoCorasick, t: &str| -> Option<String> {
            ac.is_match(t).then(|| {
                let mut out = String::with_capacity(t.len());
                ac.replace_all_with(t, &mut out, |_, _, dst| {
                    dst.push_str(MASK);
                    true
                });
                out
            })
        };
        match once(folded, text) {
            Some(t) => once(exact, &t).unwrap_or(t),
            None => once(exact, text).unwrap_or_else(|| text.to_string()),
        }
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

/// The longest line stored: a longer one is cut there, saying so.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// The bytes of log one execution may store (`EngineConfig::max_log_bytes`), shared by its nodes' sinks:
/// once they are used up, the chunk that crosses the limit is stored up to it with a marker line saying
/// where and why the log was cut, and nothing after it is stored (lines are still shown live).
#[derive(Debug)]
pub struct LogQuota {
    limit: u64,
    used: std::sync::atomic::AtomicU64,
    cut: std::sync::atomic::AtomicBool,
}

impl LogQuota {
    /// A quota of `limit` bytes of which `used` are stored already (an execution taken over).
    pub fn new(limit: u64, used: u64) -> Arc<LogQuota> {
        Arc::new(LogQuota { limit, used: used.into(), cut: (used >= limit).into() })
    }

    /// Take room for `len` bytes: how many of them may be stored, and whether this is the take that cut
    /// the log (the one that stores the marker).
    pub fn take(&self, len: u64) -> (u64, bool) {
        use std::sync::atomic::Ordering::SeqCst;
        let before = self.used.fetch_add(len, SeqCst);
        let granted = self.limit.saturating_sub(before).min(len);
        let first_cut = granted < len && !self.cut.swap(true, SeqCst);
        (granted, first_cut)
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// `text` cut to at most `max` bytes at a line end (the last whole line that fits).
fn whole_lines(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    match text[..max].rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    }
}

/// A line cut at [`MAX_LINE_BYTES`] (on a character boundary), saying how long it was.
fn bounded_line(line: &str) -> std::borrow::Cow<'_, str> {
    if line.len() <= MAX_LINE_BYTES {
        return line.into();
    }
    let mut end = MAX_LINE_BYTES;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} … [pipewright: this line of {} bytes was cut at {MAX_LINE_BYTES}]", &line[..end], line.len()).into()
}

/// The log of one node.
pub struct LogSink {
    /// Where lines are stored, under which hold (none: the execution's own lines, shown but belonging to no
    /// node).
    store: Option<(Arc<dyn Store>, store::Fence)>,
    observer: Arc<dyn Observer>,
    masker: Arc<Masker>,
    execution_id: String,
    node_id: String,
    path: String,
    buf: tokio::sync::Mutex<Buf>,
    /// The execution's log quota (none: unbounded).
    quota: Option<Arc<LogQuota>>,
}

impl LogSink {
    /// A sink for a node.
    pub fn new(
        store: (Arc<dyn Store>, store::Fence),
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
            quota: None,
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
            quota: None,
        }
    }

    /// Store at most what the execution's quota leaves.
    pub fn with_quota(mut self, quota: Arc<LogQuota>) -> Self {
        self.quota = Some(quota);
        self
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
        let line = bounded_line(text.trim_end_matches(['\n', '\r']));
        let masked = self.masker.mask(&line);
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
        let mut data = std::mem::take(&mut b.text);
        b.since = std::time::Instant::now();
        let Some((store, fence)) = &self.store else { return };
        if let Some(q) = &self.quota {
            let (granted, first_cut) = q.take(data.len() as u64);
            if granted < data.len() as u64 {
                let kept = whole_lines(&data, granted as usize).len();
                data.truncate(kept);
                if first_cut {
                    data.push_str(&format!(
                        "{}\tpipewright\tthe log of this execution reached its limit of {} bytes (the server's \
                         --max-log-bytes); later output is not stored\n",
                        now_ms(),
                        q.limit()
                    ));
                }
                if data.is_empty() {
                    return;
                }
            }
        }
        b.seq += 1;
        if let Err(e) = store.append_log(&self.execution_id, &self.node_id, b.seq, &data, fence).await {
            // The step goes on; the observer still saw the lines.
            self.observer.event(&Event::Log {
                path: self.path.clone(),
                stream: "pipewright",
                line: format!("could not store log lines: {e}"),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_cuts_the_log_once_where_it_runs_out() {
        let q = LogQuota::new(100, 0);
        // bytes asked, bytes granted, the take that cut
        let table = [(40, 40, false), (40, 40, false), (40, 20, true), (40, 0, false), (1, 0, false)];
        for (ask, granted, cut) in table {
            assert_eq!(q.take(ask), (granted, cut), "asking {ask}");
        }
        // An execution taken over with its quota used up stores nothing and says so no second time.
        let full = LogQuota::new(100, 150);
        assert_eq!(full.take(10), (0, false));
        assert_eq!(whole_lines("a\nbb\nccc\n", 6), "a\nbb\n");
        assert_eq!(whole_lines("abcdef", 3), "");
        assert_eq!(whole_lines("a\n", 9), "a\n");
        let long = "é".repeat(MAX_LINE_BYTES);
        let cut = bounded_line(&long);
        assert!(cut.len() < MAX_LINE_BYTES + 100 && cut.contains("was cut at"), "{}", cut.len());
        assert_eq!(bounded_line("short"), "short");
    }
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    const SECRET: &str = "ghp_S3cr3t/Value+42?";

    fn masked(text: &str) -> String {
        let m = Masker::default();
        m.add(SECRET);
        m.mask(text)
    }

    #[test]
    fn every_spelling_a_step_can_print_is_masked() {
        let hex: String = SECRET.bytes().map(|b| format!("{b:02x}")).collect();
        let cases: Vec<(&str, String)> = vec![
            ("as given", SECRET.to_string()),
            ("upper-cased", SECRET.to_uppercase()),
            ("lower-cased", SECRET.to_lowercase()),
            ("mixed case", "GHP_s3CR3T/vALUE+42?".to_string()),
            ("base64", STANDARD.encode(SECRET)),
            ("base64url without padding", URL_SAFE_NO_PAD.encode(SECRET)),
            ("hex", hex.clone()),
            ("HEX", hex.to_uppercase()),
            ("URL-encoded", percent_encoding::utf8_percent_encode(SECRET, URL_COMPONENT).to_string()),
            ("form-encoded", form_urlencoded::byte_serialize(SECRET.as_bytes()).collect()),
            ("quote()", percent_encoding::utf8_percent_encode(SECRET, URL_PATH).to_string()),
            ("every byte percent-encoded", SECRET.bytes().map(|b| format!("%{b:02X}")).collect()),
        ];
        for (what, spelled) in cases {
            let line = format!("token={spelled} done");
            let out = masked(&line);
            assert!(!out.contains(&spelled), "{what}: {out}");
            assert!(out.contains(MASK) && out.starts_with("token=") && out.ends_with(" done"), "{what}: {out}");
        }
    }

    #[test]
    fn base64_of_a_longer_text_holding_the_secret_loses_the_secrets_part() {
        for prefix in ["", "a", "ab", "Authorization: Bearer "] {
            let enc = STANDARD.encode(format!("{prefix}{SECRET}\n"));
            let out = masked(&enc);
            assert!(out.contains(MASK), "prefix {prefix:?}: {out}");
            // What is left cannot be decoded back to the secret.
            let left: String = out.replace(MASK, "");
            assert!(!left.contains(&STANDARD.encode(SECRET)[2..10]), "prefix {prefix:?}: {out}");
        }
    }

    #[test]
    fn a_long_secrets_base64_wrapped_at_76_columns_is_masked_line_by_line() {
        let long = "k".repeat(40) + "-private-key-material-0123456789";
        let m = Masker::default();
        m.add(&long);
        let enc = STANDARD.encode(&long);
        assert!(enc.len() > 76);
        for line in enc.as_bytes().chunks(76) {
            let line = String::from_utf8_lossy(line);
            assert_eq!(m.mask(&line), MASK, "{line}");
        }
    }

    #[test]
    fn short_values_and_unrelated_text_are_left_alone() {
        let m = Masker::default();
        m.add("ab");
        m.add(SECRET);
        assert_eq!(m.mask("ab abc ghp_ nothing here"), "ab abc ghp_ nothing here");
        assert!(!m.holds_secret("plain text"));
        assert!(m.holds_secret(&SECRET.to_uppercase()));
    }

    #[test]
    fn a_secret_containing_another_is_masked_whole() {
        let m = Masker::default();
        m.add("inner");
        m.add("outer-inner-outer");
        assert_eq!(m.mask("x outer-inner-outer y INNER"), format!("x {MASK} y {MASK}"));
    }

    #[test]
    fn each_line_of_a_multi_line_secret_is_masked() {
        let m = Masker::default();
        m.add("-----BEGIN KEY-----\nMIIBOgIBAAJBAKj34GkxFhD9\n-----END KEY-----");
        assert_eq!(m.mask("MIIBOGIBAAJBAKJ34GKXFHD9"), MASK);
        assert_eq!(m.found_in(&["uses -----END KEY----- here"]), vec!["-----END KEY-----".to_string()]);
    }
}
