//! Secrets the CLI is given — API tokens and database URLs (which may carry a password) — and where each may
//! come from: a file (`--token-file FILE`, `--database-url-file FILE`), the environment (`PIPEWRIGHT_TOKEN`,
//! `PIPEWRIGHT_DATABASE_URL`) or the command line, which every process on the machine can read
//! (`/proc/<pid>/cmdline`): a secret given there still works, with a warning, and `--help` shows only the file
//! and the environment. [`resolve`] is the one way such a value is read, and [`read_file`] / [`trimmed`] the
//! one way a secret is read from a file (the admin password and user passwords too); [`Secret`] is the clap
//! flag pair that resolves when the arguments are parsed, so the warning is printed once, at start.

use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

/// The names one kind of secret goes by, and whether a value exposes anything when given as an argument.
pub struct Names {
    /// The argument's flag without its dashes (`token` for `--token`).
    pub arg: &'static str,
    /// The file's flag without its dashes (`token-file`).
    pub file: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// Whether a value seen on the command line gives a secret away (a URL without a password does not).
    pub exposes: fn(&str) -> bool,
}

/// A secret's value, and the warning to print when it came from the command line and gives something away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The value, when one of the three forms gave it.
    pub value: Option<String>,
    /// `warning: …`, one line.
    pub warning: Option<String>,
}

/// The secret: the argument, else the file's contents (less trailing newlines), else the environment variable
/// (empty counts as unset). Giving both the argument and the file is an error naming both, as is an empty or
/// unreadable file.
pub fn resolve(
    names: &Names,
    arg: Option<String>,
    file: Option<&Path>,
    env: Option<String>,
) -> Result<Resolved, String> {
    let value = match (arg, file) {
        (Some(_), Some(_)) => {
            return Err(format!("--{} and --{} both give the value; give one of them", names.arg, names.file));
        }
        (Some(v), None) => {
            let warning = (names.exposes)(&v).then(|| {
                format!(
                    "warning: --{} on the command line can be read by every process on this machine; use --{} FILE or {}",
                    names.arg, names.file, names.env
                )
            });
            return Ok(Resolved { value: Some(v), warning });
        }
        (None, Some(f)) => {
            let v = read_file(f).map_err(|e| format!("--{} {}: cannot read it: {e}", names.file, f.display()))?;
            if v.is_empty() {
                return Err(format!("--{} {}: the file is empty", names.file, f.display()));
            }
            Some(v)
        }
        (None, None) => env.filter(|v| !v.is_empty()),
    };
    Ok(Resolved { value, warning: None })
}

/// A file holding a secret, less its trailing newlines.
pub fn read_file(path: &Path) -> std::io::Result<String> {
    Ok(trimmed(std::fs::read_to_string(path)?))
}

/// A secret as a file or stdin holds it, less its trailing newlines (`echo secret > file` adds one).
pub fn trimmed(mut text: String) -> String {
    text.truncate(text.trim_end_matches(['\n', '\r']).len());
    text
}

/// Whether a database URL carries a password: `postgres://USER:PASSWORD@HOST…`, or `password=` in its query.
/// When unsure (an `@` in the query), it says yes.
pub fn has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let in_userinfo =
        rest.rsplit_once('@').and_then(|(userinfo, _)| userinfo.split_once(':')).is_some_and(|(_, pw)| !pw.is_empty());
    let in_query = rest
        .split_once('?')
        .is_some_and(|(_, q)| q.split('&').any(|kv| kv.strip_prefix("password=").is_some_and(|pw| !pw.is_empty())));
    in_userinfo || in_query
}

/// One kind of secret flag pair.
pub trait Kind {
    /// Its names.
    const NAMES: Names;
    /// The argument's value name (`TOKEN`, `URL`).
    const VALUE: &'static str;
    /// The help of the file flag.
    const HELP: &'static str;
}

/// An API token for a server (`--server`, `pipewright agent`).
pub struct Token;

impl Kind for Token {
    const NAMES: Names =
        Names { arg: "token", file: "token-file", env: "PIPEWRIGHT_TOKEN", exposes: |v: &str| !v.is_empty() };
    const VALUE: &'static str = "TOKEN";
    const HELP: &'static str = "A file holding the API token for --server (or set PIPEWRIGHT_TOKEN)";
}

/// The PostgreSQL database to keep state in.
pub struct DatabaseUrl;

impl Kind for DatabaseUrl {
    const NAMES: Names =
        Names { arg: "database-url", file: "database-url-file", env: "PIPEWRIGHT_DATABASE_URL", exposes: has_password };
    const VALUE: &'static str = "URL";
    const HELP: &'static str = "A file holding the URL of a PostgreSQL database to keep state in instead of the \
        state directory's SQLite file (postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE), shared with the servers \
        that use it (or set PIPEWRIGHT_DATABASE_URL)";
}

/// A secret flag pair — the argument (`--token TOKEN`, hidden from `--help`) and the file (`--token-file FILE`)
/// — with the environment variable behind them, resolved when the arguments are parsed.
pub struct Secret<K> {
    value: Option<String>,
    kind: PhantomData<K>,
}

impl<K> Secret<K> {
    /// The value, if any form gave one.
    pub fn get(&self) -> Option<&str> {
        self.value.as_deref()
    }
}

impl<K> Clone for Secret<K> {
    fn clone(&self) -> Self {
        Secret { value: self.value.clone(), kind: PhantomData }
    }
}

impl<K> std::fmt::Debug for Secret<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.value.is_some() { "Secret(***)" } else { "Secret(None)" })
    }
}

impl<K: Kind> FromArgMatches for Secret<K> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let names = &K::NAMES;
        let arg = m.get_one::<String>(names.arg).cloned();
        let file = m.get_one::<PathBuf>(names.file);
        let r = resolve(names, arg, file.map(PathBuf::as_path), std::env::var(names.env).ok())
            .map_err(|e| clap::Error::raw(clap::error::ErrorKind::ValueValidation, e))?;
        if let Some(w) = r.warning {
            eprintln!("{w}");
        }
        Ok(Secret { value: r.value, kind: PhantomData })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl<K: Kind> Args for Secret<K> {
    fn augment_args(cmd: Command) -> Command {
        let names = &K::NAMES;
        cmd.arg(Arg::new(names.arg).long(names.arg).value_name(K::VALUE).hide(true)).arg(
            Arg::new(names.file)
                .long(names.file)
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help(K::HELP),
        )
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_form_in_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            Some(p)
        };
        let token_file = file("token", "pw_file\n");
        let crlf = file("crlf", "pw_crlf\r\n");
        let empty = file("empty", "\n");
        let missing = Some(dir.path().join("missing"));
        let url_file = file("url", "postgres://u:pw@db/x\n");
        let warn_token = Some(
            "warning: --token on the command line can be read by every process on this machine; use --token-file \
             FILE or PIPEWRIGHT_TOKEN"
                .to_string(),
        );
        let warn_url = Some(
            "warning: --database-url on the command line can be read by every process on this machine; use \
             --database-url-file FILE or PIPEWRIGHT_DATABASE_URL"
                .to_string(),
        );
        let ok = |v: &str, warning: &Option<String>| Ok(Resolved { value: Some(v.into()), warning: warning.clone() });
        let none = Ok(Resolved { value: None, warning: None });
        type Row<'a> = (&'a Names, Option<&'a str>, &'a Option<PathBuf>, Option<&'a str>, Result<Resolved, String>);
        let (t, d) = (&Token::NAMES, &DatabaseUrl::NAMES);
        let rows: Vec<Row> = vec![
            // The argument first (with a warning), then the file, then the environment.
            (t, Some("pw_arg"), &None, Some("pw_env"), ok("pw_arg", &warn_token)),
            (t, None, &token_file, Some("pw_env"), ok("pw_file", &None)),
            (t, None, &crlf, None, ok("pw_crlf", &None)),
            (t, None, &None, Some("pw_env"), ok("pw_env", &None)),
            (t, None, &None, Some(""), none.clone()),
            (t, None, &None, None, none.clone()),
            // Two of the argument and file forms, or a file that gives nothing, is an error naming them.
            (
                t,
                Some("pw_arg"),
                &token_file,
                None,
                Err("--token and --token-file both give the value; give one of them".into()),
            ),
            (
                t,
                None,
                &empty,
                None,
                Err(format!("--token-file {}: the file is empty", dir.path().join("empty").display())),
            ),
            (
                d,
                Some("postgres://u@db/x"),
                &url_file,
                None,
                Err("--database-url and --database-url-file both give the value; give one of them".into()),
            ),
            // A database URL warns only when it carries a password.
            (d, Some("postgres://u:pw@db/x"), &None, None, ok("postgres://u:pw@db/x", &warn_url)),
            (d, Some("postgres://u@db:5432/x"), &None, None, ok("postgres://u@db:5432/x", &None)),
            (d, Some("postgres://db:5432/x"), &None, None, ok("postgres://db:5432/x", &None)),
            (d, None, &url_file, Some("postgres://env/x"), ok("postgres://u:pw@db/x", &None)),
        ];
        for (i, (names, arg, file, env, want)) in rows.into_iter().enumerate() {
            let got = resolve(names, arg.map(String::from), file.as_deref(), env.map(String::from));
            assert_eq!(got, want, "row {i}");
        }
        let got = resolve(&Token::NAMES, None, missing.as_deref(), None).unwrap_err();
        assert!(got.starts_with("--token-file ") && got.contains("cannot read it"), "{got}");
    }

    #[test]
    fn the_flag_pairs_sit_in_every_command_without_clashing() {
        <crate::Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn a_password_is_seen_wherever_a_url_carries_it() {
        for (url, password) in [
            ("postgres://user:secret@db:5432/pipewright", true),
            ("postgresql://user:p%40ss@db/pipewright", true),
            ("postgres://user:secret@[::1]:5432/pipewright", true),
            ("postgres://user@db/pipewright?password=secret", true),
            ("postgres://user@db/pipewright?sslmode=require&password=secret", true),
            ("postgres://user:@db/pipewright", false),
            ("postgres://user@db:5432/pipewright", false),
            ("postgres://db:5432/pipewright", false),
            ("postgres://user@[::1]:5432/pipewright?sslmode=require", false),
            ("postgres://user@db/pipewright?password=", false),
        ] {
            assert_eq!(has_password(url), password, "{url}");
        }
    }
}
