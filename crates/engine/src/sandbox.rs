//! Step isolation. With [`Isolation::Landlock`], every step process is started through a small launcher — the
//! `pipewright-step` program beside `pipewright`, or `pipewright __step-sandbox …` — that, before it executes
//! the step's program, confines itself with Landlock: read-write access only to the execution's workspace and
//! the attempt's output directory, read-only access to its own script and to system paths (`/usr`, `/etc`,
//! …), no signals to and no abstract-socket connections with processes outside its own sandbox; and, when
//! pipewright runs as root, drops to an unprivileged step user. Everything else — the state directory with the
//! database and keys, other executions' workspaces, the home directory — is out of reach. The launcher is a
//! separate program because the confinement must be applied between fork and exec, in a process of its own.
//!
//! This file owns the policy ([`Sandbox`]: which paths, which user), the directories steps get (workspace,
//! control directory, output directory) and their owners and modes, the launcher's argument format, the
//! launcher itself ([`launcher_main`]) and the check that the kernel can enforce it ([`Sandbox::probe`]).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The first argument that turns the `pipewright` binary into the step launcher.
pub const LAUNCHER_ARG: &str = "__step-sandbox";

/// How steps are isolated.
#[derive(Debug, Clone, Default)]
pub enum Isolation {
    /// Steps run with pipewright's own rights (explicitly relaxed, or a library user's choice).
    #[default]
    None,
    /// Steps are confined by Landlock (and run as the step user when pipewright is root).
    Landlock(Sandbox),
}

impl Isolation {
    /// What steps may reach over the network: unconfined steps have the host's.
    pub fn network(&self) -> Network {
        match self {
            Isolation::Landlock(sb) => sb.network,
            Isolation::None => Network::Host,
        }
    }
}

/// An unprivileged user that steps run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUser {
    /// The name (`nobody`).
    pub name: String,
    /// Its user id.
    pub uid: u32,
    /// Its primary group id.
    pub gid: u32,
}

impl StepUser {
    /// Look a user up by name (or numeric id).
    pub fn lookup(name: &str) -> Result<StepUser, String> {
        let user = match name.parse::<u32>() {
            Ok(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
            Err(_) => nix::unistd::User::from_name(name),
        }
        .map_err(|e| format!("cannot look up the step user `{name}`: {e}"))?
        .ok_or_else(|| {
            format!("there is no user `{name}` for steps to run as; create it or choose another with --step-user")
        })?;
        if user.uid.is_root() {
            return Err(format!(
                "the step user `{name}` is root; steps must run as an unprivileged user (--step-user)"
            ));
        }
        Ok(StepUser { name: user.name, uid: user.uid.as_raw(), gid: user.gid.as_raw() })
    }
}

/// The confinement of step processes.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The launcher program (the `pipewright` binary).
    pub launcher: PathBuf,
    /// Paths steps may read and execute (system paths, the directories on `PATH`, `--step-read-path`).
    pub read_paths: Vec<PathBuf>,
    /// The user steps run as, when pipewright runs as root.
    pub user: Option<StepUser>,
    /// What the steps of a stage may reach over the network.
    pub network: Network,
}

/// What a stage's steps may reach over the network. With `None` and `Isolated`, each stage has a network
/// namespace (and an IPC namespace) of its own, shared by its steps, so that a `Background` service is
/// reachable on `localhost` from the steps after it ([`StageNet`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// The host's network, as it is (explicit; every listener of the host is reachable).
    #[default]
    Host,
    /// Only the stage's own loopback.
    None,
    /// Outbound connections through `slirp4netns`, with every address of the host refused: its loopback
    /// (slirp's `--disable-host-loopback`), each of its interfaces' own addresses and link-local addresses
    /// (169.254.0.0/16, the cloud metadata address among them), by `prohibit` routes the step cannot change.
    Isolated,
}

impl Network {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Network::Host => "host",
            Network::None => "none",
            Network::Isolated => "isolated",
        }
    }
}

/// System paths a step may read (those that exist): programs, libraries, configuration, and the kernel's
/// views of processes and devices.
const SYSTEM_READ: &[&str] =
    &["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/proc", "/sys", "/nix/store"];

/// Devices a step may read and write.
const DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"];

/// The installation a `PATH` directory belongs to, when its programs need it: `…/bin`, `…/sbin` or
/// `…/shims` of a tool manager (`/usr/local`, `~/.cargo`, `~/.pyenv`, `~/.nvm/versions/node/v20`) needs its
/// libraries and data beside it. Never the root or a home directory itself.
fn tool_root(dir: &Path) -> Option<PathBuf> {
    let name = dir.file_name()?.to_str()?;
    if !matches!(name, "bin" | "sbin" | "shims") {
        return None;
    }
    let parent = dir.parent()?;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let is_home = home.is_some_and(|h| h == parent) || parent.parent() == Some(Path::new("/home"));
    (parent != Path::new("/") && !is_home && parent != Path::new("/root")).then(|| parent.to_path_buf())
}

impl Sandbox {
    /// The policy for steps of a pipewright whose private paths (state directory, work root) are `private`:
    /// system paths, the directories on `PATH` and `extra`, except any that would expose a private path
    /// (a read rule on a parent covers everything below it).
    pub fn new(launcher: PathBuf, extra: &[PathBuf], user: Option<StepUser>, private: &[PathBuf]) -> Sandbox {
        let private: Vec<PathBuf> =
            private.iter().map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())).collect();
        let mut read_paths: Vec<PathBuf> = Vec::new();
        let path_dirs: Vec<PathBuf> =
            std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
        let candidates = SYSTEM_READ
            .iter()
            .map(PathBuf::from)
            .chain(path_dirs.iter().flat_map(|d| tool_root(d).into_iter().chain([d.clone()])))
            .chain(extra.iter().cloned());
        for c in candidates {
            if !c.is_absolute() {
                continue;
            }
            let Ok(real) = std::fs::canonicalize(&c) else { continue };
            if private.iter().any(|p| p.starts_with(&real)) || read_paths.contains(&real) {
                continue;
            }
            read_paths.push(real);
        }
        Sandbox { launcher, read_paths, user, network: Network::Host }
    }

    /// The launcher command line for a step:
    /// `__step-sandbox [--ns --parent PID] [--uid U --gid G] --rw P… --ro P… -- PROGRAM ARGS…`,
    /// with `writable` and `readable` paths of the step's own on top of the sandbox's read paths.
    pub fn command(
        &self,
        writable: &[&Path],
        readable: &[&Path],
        program: &str,
        args: &[String],
    ) -> (PathBuf, Vec<OsString>) {
        self.command_in(None, None, writable, readable, program, args)
    }

    /// [`Sandbox::command`] for a step that joins its stage's network and IPC namespaces (`net`) and gets a
    /// root of its own built in `root` (an empty directory; see [`own_root`]).
    #[allow(clippy::too_many_arguments)]
    pub fn command_in(
        &self,
        net: Option<&StageNet>,
        root: Option<&Path>,
        writable: &[&Path],
        readable: &[&Path],
        program: &str,
        args: &[String],
    ) -> (PathBuf, Vec<OsString>) {
        // Every step in its own namespaces, dying with the process that starts it (the engine or an agent).
        let mut out: Vec<OsString> =
            vec![LAUNCHER_ARG.into(), "--ns".into(), "--parent".into(), std::process::id().to_string().into()];
        if let Some(r) = root {
            out.extend(["--root".into(), r.as_os_str().to_owned()]);
        }
        if let Some(n) = net {
            let ns = |kind: &str| PathBuf::from(format!("/proc/{}/ns/{kind}", n.holder.id()));
            out.extend(["--join-net".into(), ns("net").into(), "--join-ipc".into(), ns("ipc").into()]);
        }
        if let Some(u) = &self.user {
            out.extend(["--uid".into(), u.uid.to_string().into(), "--gid".into(), u.gid.to_string().into()]);
        }
        for w in writable {
            out.extend(["--rw".into(), w.as_os_str().to_owned()]);
        }
        for r in readable.iter().copied().chain(self.read_paths.iter().map(PathBuf::as_path)) {
            out.extend(["--ro".into(), r.as_os_str().to_owned()]);
        }
        out.push("--".into());
        out.push(program.into());
        out.extend(args.iter().map(OsString::from));
        (self.launcher.clone(), out)
    }

    /// Check, by running the launcher once, that this kernel enforces the confinement fully.
    pub fn probe(&self) -> Result<(), String> {
        let (program, args) = self.command(&[], &[], "true", &[]);
        let out = std::process::Command::new(&program)
            .args(&args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot start the step launcher {}: {e}", program.display()))?;
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_string()) }
    }
}

/// The directory below the work root that holds, per execution, the scripts of its step attempts and a fresh
/// directory per attempt for the outputs it captures. Steps can read their own script and write into their
/// own output directory, never rename, replace or plant anything there.
pub const CONTROL_DIR: &str = ".pw";

/// The step user, when steps run as one.
pub fn step_user(isolation: &Isolation) -> Option<&StepUser> {
    match isolation {
        Isolation::Landlock(s) => s.user.as_ref(),
        Isolation::None => None,
    }
}

fn mkdir_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(mode).create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

fn give(path: &Path, user: Option<&StepUser>) -> std::io::Result<()> {
    if let Some(u) = user {
        nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(u.uid)), Some(nix::unistd::Gid::from_raw(u.gid)))
            .map_err(std::io::Error::from)?;
    }
    Ok(())
}

/// Whether `user` may pass through every existing directory from `/` down to `path` (owner, group or other
/// search bit; supplementary groups and ACLs are not considered).
pub fn reachable_by(path: &Path, user: &StepUser) -> bool {
    use std::os::unix::fs::MetadataExt;
    let mut dirs: Vec<&Path> = path.ancestors().collect();
    dirs.reverse();
    dirs.iter().filter_map(|d| std::fs::metadata(d).ok()).all(|m| {
        let mode = m.mode();
        if m.uid() == user.uid {
            mode & 0o100 != 0
        } else if m.gid() == user.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        }
    })
}

/// Where workspaces live when the step user cannot reach `<state-dir>/work` (a state directory below a
/// private home, say): a root-owned directory only root can create, one per state directory.
pub fn fallback_work_root(state_dir: &Path) -> PathBuf {
    let name: String = state_dir
        .to_string_lossy()
        .trim_start_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' })
        .collect();
    PathBuf::from("/var/lib/pipewright-steps").join(name)
}

/// Lock down the state directory and the work root: `0700`, or `0711` (enter, but not list) where the step
/// user must pass through to reach its workspaces.
pub fn prepare_dirs(state_dir: &Path, work_root: &Path, isolation: &Isolation) -> std::io::Result<()> {
    let user = step_user(isolation);
    let through = if user.is_some() { 0o711 } else { 0o700 };
    let state_mode = if user.is_some() && work_root.starts_with(state_dir) { 0o711 } else { 0o700 };
    mkdir_mode(state_dir, state_mode)?;
    mkdir_mode(work_root, through)?;
    mkdir_mode(&work_root.join(CONTROL_DIR), through)
}

/// An execution's workspace: created `0700`, owned by the step user when there is one, with a home and a
/// temporary directory for its steps inside it (`.pipewright/home`, `.pipewright/tmp`).
pub fn prepare_workspace(config: &crate::EngineConfig, workdir: &Path) -> std::io::Result<()> {
    let user = step_user(&config.isolation);
    let through = if user.is_some() { 0o711 } else { 0o700 };
    let control = control_dir(&config.work_root, workdir);
    for d in [&config.work_root, &config.work_root.join(CONTROL_DIR), &control] {
        mkdir_mode(d, through)?;
    }
    mkdir_mode(workdir, 0o700)?;
    give(workdir, user)?;
    let meta = workdir.join(".pipewright");
    for d in [meta.join("home"), meta.join("tmp")] {
        mkdir_mode(&d, 0o700)?;
        give(&d, user)?;
    }
    give(&meta, user)
}

/// The control directory of the execution whose workspace is `workdir`: `<work root>/.pw/<execution>`.
pub fn control_dir(work_root: &Path, workdir: &Path) -> PathBuf {
    work_root.join(CONTROL_DIR).join(workdir.file_name().unwrap_or_default())
}

/// Write a step attempt's script as `<control>/<node>.sh`: a new file (an existing one is an error), `0600`,
/// owned by the step user.
pub fn write_script(control: &Path, node_id: &str, body: &str, isolation: &Isolation) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let file = control.join(format!("{node_id}.sh"));
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&file)?;
    f.write_all(body.as_bytes())?;
    give(&file, step_user(isolation))?;
    Ok(file)
}

/// A step attempt's directory for the outputs it captures, `<control>/<node>.out`: fresh (an existing one is
/// an error, so nothing can be planted in it), `0700`, owned by the step user.
pub fn output_dir(control: &Path, node_id: &str, isolation: &Isolation) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = control.join(format!("{node_id}.out"));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    give(&dir, step_user(isolation))?;
    Ok(dir)
}

/// A step attempt's empty directory that its own root is built in, `<control>/<node>.root` (fresh, `0700`,
/// root's): the mounts inside are the step's own, so from outside it stays empty and is removed after.
pub fn root_dir(control: &Path, node_id: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = control.join(format!("{node_id}.root"));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

/// Read a file a step wrote in its output directory without following a link it may have put there, and
/// only if it is a regular file of at most `limit` bytes (longer values are cut there).
pub fn read_step_file(path: &Path, limit: u64) -> Option<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut out = Vec::new();
    f.take(limit).read_to_end(&mut out).ok()?;
    Some(out)
}

/// The launcher's own arguments.
#[derive(Debug, Default, PartialEq)]
struct LaunchArgs {
    /// New namespaces for the step.
    ns: bool,
    /// This is the first process inside them (PID 1), started by the launcher that made them.
    init: bool,
    /// The process whose death ends the step.
    parent: Option<i32>,
    /// The stage's network and IPC namespaces, to join (`/proc/PID/ns/net`, `…/ipc`).
    join_net: Option<PathBuf>,
    join_ipc: Option<PathBuf>,
    /// An empty directory to build the step's own root in (only its allowed paths; see [`own_root`]).
    root: Option<PathBuf>,
    /// Hold a new network and IPC namespace for a stage ([`hold`]), refusing these destinations.
    hold: bool,
    prohibit: Vec<String>,
    uid: Option<u32>,
    gid: Option<u32>,
    rw: Vec<PathBuf>,
    ro: Vec<PathBuf>,
    program: Vec<OsString>,
}

fn parse_args(args: &[OsString]) -> Result<LaunchArgs, String> {
    let mut out = LaunchArgs::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{} needs a value", a.to_string_lossy()));
        match a.as_bytes() {
            b"--ns" => out.ns = true,
            b"--init" => out.init = true,
            b"--hold-net" => out.hold = true,
            b"--root" => out.root = Some(value()?.into()),
            b"--prohibit" => out.prohibit.push(value()?.to_string_lossy().into_owned()),
            b"--join-net" => out.join_net = Some(value()?.into()),
            b"--join-ipc" => out.join_ipc = Some(value()?.into()),
            b"--parent" => out.parent = Some(value()?.to_string_lossy().parse().map_err(|_| "--parent: not a number")?),
            b"--uid" => out.uid = Some(value()?.to_string_lossy().parse().map_err(|_| "--uid: not a number")?),
            b"--gid" => out.gid = Some(value()?.to_string_lossy().parse().map_err(|_| "--gid: not a number")?),
            b"--rw" => out.rw.push(value()?.into()),
            b"--ro" => out.ro.push(value()?.into()),
            b"--" => {
                out.program = it.cloned().collect();
                break;
            }
            other => return Err(format!("unknown launcher argument `{}`", String::from_utf8_lossy(other))),
        }
    }
    if out.program.is_empty() && !out.hold {
        return Err("no program to run after `--`".into());
    }
    Ok(out)
}

/// Confine this process as `a` says (Landlock, then the step user): what it starts from then on inherits it.
fn confine(a: &LaunchArgs) -> Result<(), String> {
    use landlock::{
        ABI, Access, AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
        RulesetStatus, Scope,
    };
    // The newest rights this build knows: every filesystem access (ABI 5), signals and abstract sockets (6).
    let fs_abi = ABI::V5;
    let rules = || -> Result<landlock::RulesetCreated, landlock::RulesetError> {
        let mut r = Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessFs::from_all(fs_abi))?
            .scope(Scope::from_all(ABI::V6))?
            .create()?;
        let read = AccessFs::from_read(fs_abi);
        let entries =
            a.ro.iter()
                .map(|p| (p.as_path(), read))
                .chain(DEVICES.iter().map(|d| (Path::new(d), read | AccessFs::WriteFile)))
                .chain(a.rw.iter().map(|p| (p.as_path(), AccessFs::from_all(fs_abi))));
        for (path, rights) in entries {
            // Opened here, with the launcher's own rights (before it drops them); missing paths are skipped.
            let Ok(fd) = PathFd::new(path) else { continue };
            let rights = if path.is_dir() { rights } else { rights & AccessFs::from_file(fs_abi) };
            r = r.add_rule(PathBeneath::new(fd, rights))?;
        }
        Ok(r)
    };
    let ruleset = rules().map_err(|e| format!("cannot set up step isolation (Landlock): {e}"))?;
    // Drop privileges after the paths are opened and before the rules apply.
    if let (Some(uid), Some(gid)) = (a.uid, a.gid) {
        use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};
        if let Err(e) =
            setgroups(&[]).and_then(|()| setgid(Gid::from_raw(gid))).and_then(|()| setuid(Uid::from_raw(uid)))
        {
            return Err(format!("cannot switch to the step user (uid {uid}): {e}"));
        }
    }
    match ruleset.restrict_self() {
        Ok(s) if s.ruleset == RulesetStatus::FullyEnforced && s.no_new_privs => Ok(()),
        Ok(s) => Err(format!(
            "this kernel cannot enforce step isolation (Landlock {:?}); use a kernel with Landlock ABI 6 or newer, or run with --step-isolation none",
            s.ruleset
        )),
        Err(e) => Err(format!(
            "this kernel cannot enforce step isolation: {e}; use a kernel with Landlock ABI 6 or newer, or run with --step-isolation none"
        )),
    }
}

/// Become the step's program. Returns only on failure.
fn exec(a: &LaunchArgs) -> String {
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(&a.program[0]).args(&a.program[1..]).exec();
    format!("cannot start `{}`: {err}", a.program[0].to_string_lossy())
}

/// Signals the outer launcher leaves to the step: a stop sent to the step's process group reaches the step
/// itself (and PID 1 of its namespace ignores it), so the launcher must outlive it to report how it ended.
fn group_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT] {
        set.add(s);
    }
    set
}

/// End this process as `status` says: the same exit code, or 128 + the signal that ended it.
fn end_like(status: std::process::ExitStatus) -> ! {
    use std::os::unix::process::ExitStatusExt;
    std::process::exit(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// The outer launcher: make the step's namespaces (PID, mount, UTS, IPC; through a user namespace when not
/// root), start PID 1 inside them (this program again, `--init`), and wait for it — or, when the process that
/// started the step dies first (an agent killed with -9, say), kill it, which the kernel turns into the death
/// of every process in the namespace. The parent is watched through a pidfd, not `PR_SET_PDEATHSIG`, which
/// fires when the forking *thread* ends.
fn outer(a: &LaunchArgs, args: &[OsString]) -> Result<std::convert::Infallible, String> {
    use nix::sched::{CloneFlags, unshare};
    use rustix::event::{PollFd, PollFlags, poll};
    use rustix::process::{Pid, PidfdFlags, pidfd_open};
    let parent = match a.parent {
        Some(p) => {
            let pid = Pid::from_raw(p).ok_or("--parent: not a process id")?;
            let fd = pidfd_open(pid, PidfdFlags::empty()).map_err(|e| format!("cannot watch process {p}: {e}"))?;
            if nix::unistd::getppid().as_raw() != p {
                return Err("the process that started this step has ended".into());
            }
            Some(fd)
        }
        None => None,
    };
    // The stage's namespaces are joined first, while this process may still do so.
    let joins = [(&a.join_net, CloneFlags::CLONE_NEWNET), (&a.join_ipc, CloneFlags::CLONE_NEWIPC)];
    for (path, kind) in joins {
        let Some(path) = path else { continue };
        let f = std::fs::File::open(path)
            .map_err(|e| format!("cannot open the stage's namespace {}: {e}", path.display()))?;
        nix::sched::setns(&f, kind)
            .map_err(|e| format!("cannot join the stage's namespace {}: {e}", path.display()))?;
    }
    let root = nix::unistd::geteuid().is_root();
    if !root {
        let (uid, gid) = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
        unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| {
            format!("cannot create a user namespace for the step ({e}); enable unprivileged user namespaces, run as root, or use --step-isolation none")
        })?;
        let write = |file: &str, text: String| {
            std::fs::write(format!("/proc/self/{file}"), text).map_err(|e| format!("cannot write {file}: {e}"))
        };
        write("setgroups", "deny".into())?;
        write("uid_map", format!("{uid} {uid} 1"))?;
        write("gid_map", format!("{gid} {gid} 1"))?;
    }
    let mut own = CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS;
    if a.join_ipc.is_none() {
        own |= CloneFlags::CLONE_NEWIPC;
    }
    unshare(own).map_err(|e| {
        format!("cannot create the step's namespaces ({e}); run with --step-isolation none to do without")
    })?;
    group_signals().thread_block().map_err(|e| format!("cannot block signals: {e}"))?;
    let me = std::env::current_exe().map_err(|e| format!("cannot find the launcher program: {e}"))?;
    // `--init` is read before `--ns`: the same arguments make the first process inside.
    let mut init_args: Vec<OsString> = vec![LAUNCHER_ARG.into(), "--init".into()];
    init_args.extend(args.iter().cloned());
    let mut child = std::process::Command::new(me)
        .args(&init_args)
        .spawn()
        .map_err(|e| format!("cannot start the step's first process: {e}"))?;
    let child_pid = Pid::from_raw(child.id() as i32).ok_or("no child")?;
    let child_fd = pidfd_open(child_pid, PidfdFlags::empty()).map_err(|e| format!("cannot watch the step: {e}"))?;
    loop {
        let mut fds = vec![PollFd::new(&child_fd, PollFlags::IN)];
        if let Some(p) = &parent {
            fds.push(PollFd::new(p, PollFlags::IN));
        }
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(format!("cannot wait for the step: {e}")),
        }
        let parent_gone = fds.get(1).is_some_and(|f| !f.revents().is_empty());
        let child_done = !fds[0].revents().is_empty();
        if parent_gone && !child_done {
            // PID 1 dies, and with it every process of the step.
            let _ = child.kill();
        }
        if parent_gone || child_done {
            let status = child.wait().map_err(|e| format!("cannot wait for the step: {e}"))?;
            end_like(status);
        }
    }
}

/// Mount a `/proc` of this process's PID namespace at `at`.
fn mount_proc(at: &Path) -> Result<(), String> {
    use nix::mount::{MsFlags, mount};
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), at, Some("proc"), flags, None::<&str>)
        .map_err(|e| format!("cannot mount the step's /proc at {}: {e}", at.display()))
}

/// Top-level names that are links on merged-`/usr` systems (`/bin` → `usr/bin`); the step's root gets the
/// same links.
const ROOT_LINKS: &[&str] = &["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/// Make the step's root in `root` (an empty directory) and move into it: a tmpfs holding only the paths the
/// step may use, bound at their own paths (read-only ones read-only), the devices it may use, a `/proc` of
/// its own PID namespace, the `/bin`-style links — and nothing else. What lives elsewhere on the host (the
/// Unix sockets of PostgreSQL or MariaDB under `/run`, `/tmp`, the state directory) is not there to connect
/// to, which Landlock alone cannot refuse.
fn own_root(a: &LaunchArgs, root: &Path) -> Result<(), String> {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    let fail = |what: &str, p: &Path, e: &dyn std::fmt::Display| format!("cannot {what} {}: {e}", p.display());
    let cwd = std::env::current_dir().map_err(|e| format!("cannot read the working directory: {e}"))?;
    mount(Some("tmpfs"), root, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0755,size=1m"))
        .map_err(|e| fail("mount the step's root at", root, &e))?;
    let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    // `/etc/resolv.conf` may be a link out of `/etc` (into `/run/systemd/resolve/`, say): its file too.
    let resolv = std::fs::canonicalize("/etc/resolv.conf").ok().filter(|r| r != Path::new("/etc/resolv.conf"));
    // Parents before children, so a path inside another is bound on top of it.
    let mut paths: Vec<(&Path, bool)> =
        a.ro.iter()
            .map(|p| (p.as_path(), false))
            .chain(DEVICES.iter().map(|d| (Path::new(d), true)))
            .chain(a.rw.iter().map(|p| (p.as_path(), true)))
            .chain(resolv.iter().map(|r| (r.as_path(), false)))
            .filter(|(p, _)| p.is_absolute() && !p.starts_with("/proc") && p.exists())
            .collect();
    paths.sort_by_key(|(p, _)| p.components().count());
    for (path, writable) in paths {
        let target = inside(path);
        if !target.exists() {
            if path.is_dir() {
                std::fs::create_dir_all(&target).map_err(|e| fail("create", &target, &e))?;
            } else {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| fail("create", parent, &e))?;
                }
                std::fs::File::create(&target).map_err(|e| fail("create", &target, &e))?;
            }
        }
        mount(Some(path), &target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .map_err(|e| fail("bind", path, &e))?;
        if !writable {
            let ro = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID;
            mount(None::<&str>, &target, None::<&str>, ro, None::<&str>)
                .map_err(|e| fail("make read-only", path, &e))?;
        }
    }
    for link in ROOT_LINKS {
        let target = inside(Path::new(link));
        if let Ok(to) = std::fs::read_link(link)
            && !target.exists()
        {
            std::os::unix::fs::symlink(&to, &target).map_err(|e| fail("link", &target, &e))?;
        }
    }
    let dev = inside(Path::new("/dev"));
    std::fs::create_dir_all(&dev).map_err(|e| fail("create", &dev, &e))?;
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(to, dev.join(name));
    }
    let proc_dir = inside(Path::new("/proc"));
    std::fs::create_dir_all(&proc_dir).map_err(|e| fail("create", &proc_dir, &e))?;
    mount_proc(&proc_dir)?;
    let old = root.join(".old-root");
    std::fs::create_dir_all(&old).map_err(|e| fail("create", &old, &e))?;
    nix::unistd::pivot_root(root, &old).map_err(|e| fail("move into the step's root", root, &e))?;
    nix::unistd::chdir("/").map_err(|e| format!("cannot enter the step's root: {e}"))?;
    umount2("/.old-root", MntFlags::MNT_DETACH).map_err(|e| format!("cannot leave the host's root: {e}"))?;
    let _ = std::fs::remove_dir("/.old-root");
    // The root itself read-only: nothing can be planted beside the bound paths.
    let ro = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(None::<&str>, "/", None::<&str>, ro, None::<&str>)
        .map_err(|e| format!("cannot make the step's root read-only: {e}"))?;
    nix::unistd::chdir(&cwd).map_err(|e| fail("enter", &cwd, &e))?;
    Ok(())
}

/// PID 1 of the step's namespaces: a `/proc` of its own (only the step's processes in it), its own host name,
/// then confinement; it starts the step's program, reaps every process the step leaves, and ends as the
/// program ended — which ends whatever else still runs in the namespace.
fn init(a: &LaunchArgs) -> Result<std::convert::Infallible, String> {
    use nix::mount::{MsFlags, mount};
    let _ = nix::sys::signal::SigSet::all().thread_unblock();
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| format!("cannot make the step's mounts private: {e}"))?;
    match &a.root {
        Some(root) => own_root(a, root)?,
        None => mount_proc(Path::new("/proc"))?,
    }
    nix::unistd::sethostname("pipewright-step").map_err(|e| format!("cannot set the step's host name: {e}"))?;
    confine(a)?;
    let child = std::process::Command::new(&a.program[0])
        .args(&a.program[1..])
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", a.program[0].to_string_lossy()))?;
    let main = nix::unistd::Pid::from_raw(child.id() as i32);
    loop {
        use nix::sys::wait::{WaitStatus, waitpid};
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == main => std::process::exit(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == main => std::process::exit(128 + sig as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("cannot wait for the step: {e}")),
        }
    }
}

/// Find `ip` (iproute2), which sets the stage's routes.
fn ip_program() -> Result<&'static str, String> {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| "the step network needs iproute2 (`ip`); install it or use --step-network host".to_string())
}

/// Run `ip ARGS` in this process's network namespace.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new(ip_program()?)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// The namespace holder of a stage (`__step-sandbox --hold-net [--prohibit ADDR]…`): a new network and IPC
/// namespace with its loopback up and a `prohibit` route for each address given; says `ready` on stdout,
/// then holds the namespaces until its stdin closes (the executor that started it ends or lets go).
fn hold(a: &LaunchArgs) -> Result<std::convert::Infallible, String> {
    use nix::sched::{CloneFlags, unshare};
    use std::io::{Read, Write};
    unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC)
        .map_err(|e| format!("cannot create the stage's network namespace: {e}"))?;
    ip(&["link", "set", "lo", "up"])?;
    for dest in &a.prohibit {
        ip(&["route", "add", "prohibit", dest])?;
    }
    let mut out = std::io::stdout();
    out.write_all(b"ready\n").and_then(|()| out.flush()).map_err(|e| format!("cannot say ready: {e}"))?;
    let mut sink = [0u8; 64];
    while std::io::stdin().read(&mut sink).is_ok_and(|n| n > 0) {}
    std::process::exit(0)
}

/// Every address of this host's interfaces, IPv4 and IPv6.
pub fn host_addresses() -> Vec<std::net::IpAddr> {
    let mut out: Vec<std::net::IpAddr> = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(addr) = a.address else { continue };
            if let Some(v4) = addr.as_sockaddr_in() {
                out.push(v4.ip().into());
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                out.push(v6.ip().into());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The destinations a stage's isolated network refuses: each IPv4 address of this host's interfaces but
/// loopback (a stage's own loopback is its own), as a host route, and all of link-local. (The stage has no
/// IPv6 route at all.)
pub fn host_destinations() -> Vec<String> {
    let mut out = vec!["169.254.0.0/16".to_string()];
    for ip in host_addresses() {
        if let std::net::IpAddr::V4(v4) = ip
            && !v4.is_loopback()
        {
            out.push(format!("{v4}/32"));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// A stage's network and IPC namespaces, held by a process of their own while the stage has steps running
/// (and for `Isolated`, the `slirp4netns` that gives them outbound connections). Dropping it ends both.
#[derive(Debug)]
pub struct StageNet {
    holder: std::process::Child,
    slirp: Option<std::process::Child>,
    /// The write end of slirp4netns' exit pipe, held while the namespace lives.
    slirp_exit: Option<std::process::ChildStdin>,
}

impl StageNet {
    /// Make a stage's namespaces for `sb.network` (not `Host`).
    pub fn open(sb: &Sandbox) -> Result<StageNet, String> {
        use std::io::BufRead;
        let mut args: Vec<OsString> = vec![LAUNCHER_ARG.into(), "--hold-net".into()];
        if sb.network == Network::Isolated {
            for d in host_destinations() {
                args.extend(["--prohibit".into(), d.into()]);
            }
        }
        let mut holder = std::process::Command::new(&sb.launcher)
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the stage's network holder {}: {e}", sb.launcher.display()))?;
        let mut line = String::new();
        let said = holder.stdout.take().map(|o| std::io::BufReader::new(o).read_line(&mut line));
        if line.trim() != "ready" {
            let mut err = String::new();
            if let Some(mut e) = holder.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            let _ = holder.kill();
            let _ = holder.wait();
            return Err(format!("cannot make the stage's network: {} {said:?}", err.trim()));
        }
        let mut net = StageNet { holder, slirp: None, slirp_exit: None };
        if sb.network == Network::Isolated {
            // It ends when its standard input closes (`--exit-fd 0`): with this process, even when it is
            // killed, so no slirp4netns outlives the executor that made it.
            let mut slirp = std::process::Command::new("slirp4netns")
                .args(["--configure", "--mtu=65520", "--disable-host-loopback", "--exit-fd=0"])
                .arg(net.holder.id().to_string())
                .arg("tap0")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|e| {
                    format!("cannot start slirp4netns for the stage's network ({e}); install it (Debian: slirp4netns) or use --step-network none")
                })?;
            net.slirp_exit = slirp.stdin.take();
            net.slirp = Some(slirp);
            net.wait_configured()?;
        }
        Ok(net)
    }

    /// Wait (at most 5 s) until slirp4netns has given the namespace its default route.
    fn wait_configured(&mut self) -> Result<(), String> {
        let routes = format!("/proc/{}/net/route", self.holder.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let table = std::fs::read_to_string(&routes).unwrap_or_default();
            if table.lines().skip(1).any(|l| l.split_whitespace().nth(1) == Some("00000000")) {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.slirp.as_mut().map(|c| c.try_wait()) {
                return Err(format!("slirp4netns ended ({status}) before the stage's network was up"));
            }
            if std::time::Instant::now() > deadline {
                return Err("slirp4netns did not set up the stage's network within 5 s".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

impl Drop for StageNet {
    fn drop(&mut self) {
        drop(self.slirp_exit.take());
        for c in self.slirp.iter_mut().chain(std::iter::once(&mut self.holder)) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The launcher's entry point (`pipewright __step-sandbox …`, arguments after that word): with `--ns`, the
/// step's own namespaces first ([`outer`], then [`init`] inside them); then confine, drop privileges and run
/// the step. Exits 127 with a message on stderr when it cannot.
pub fn launcher_main(args: &[OsString]) -> ! {
    let msg = match parse_args(args) {
        Ok(a) if a.hold => match hold(&a) {
            Err(e) => e,
        },
        Ok(a) if a.init => match init(&a) {
            Err(e) => e,
        },
        Ok(a) if a.ns => match outer(&a, args) {
            Err(e) => e,
        },
        Ok(a) => match confine(&a) {
            Ok(()) => exec(&a),
            Err(e) => e,
        },
        Err(e) => e,
    };
    eprintln!("pipewright: {msg}");
    std::process::exit(127)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn launcher_arguments_round_trip() {
        let sb = Sandbox {
            launcher: "/bin/pw".into(),
            read_paths: vec!["/usr".into()],
            user: Some(StepUser { name: "nobody".into(), uid: 65534, gid: 65534 }),
            network: Network::Host,
        };
        let (prog, args) = sb.command(&[Path::new("/w")], &[], "sh", &["script.sh".into()]);
        assert_eq!(prog, PathBuf::from("/bin/pw"));
        assert_eq!(args[0], LAUNCHER_ARG);
        let parsed = parse_args(&args[1..]).unwrap();
        assert_eq!(
            parsed,
            LaunchArgs {
                ns: true,
                init: false,
                parent: Some(std::process::id() as i32),
                join_net: None,
                join_ipc: None,
                root: None,
                hold: false,
                prohibit: vec![],
                uid: Some(65534),
                gid: Some(65534),
                rw: vec!["/w".into()],
                ro: vec!["/usr".into()],
                program: os(&["sh", "script.sh"]),
            }
        );
    }

    #[test]
    fn bad_launcher_arguments_are_refused() {
        assert!(parse_args(&os(&["--rw"])).is_err());
        assert!(parse_args(&os(&["--uid", "x", "--", "sh"])).is_err());
        assert!(parse_args(&os(&["--bogus", "--", "sh"])).is_err());
        assert!(parse_args(&os(&["--rw", "/w"])).is_err());
    }

    #[test]
    fn tool_installations_beside_path_directories_are_readable_but_never_a_home() {
        let cases: &[(&str, Option<&str>)] = &[
            ("/usr/local/bin", Some("/usr/local")),
            ("/root/.cargo/bin", Some("/root/.cargo")),
            ("/root/.pyenv/shims", Some("/root/.pyenv")),
            ("/usr/bin", Some("/usr")),
            ("/bin", None),
            ("/home/alice/bin", None),
            ("/root/bin", None),
            ("/opt/tools", None),
        ];
        for (dir, want) in cases {
            assert_eq!(tool_root(Path::new(dir)), want.map(PathBuf::from), "{dir}");
        }
    }

    #[test]
    fn read_paths_never_cover_private_paths() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let sb = Sandbox::new("/bin/pw".into(), &[dir.path().to_path_buf(), "/usr".into()], None, &[state]);
        let real = std::fs::canonicalize(dir.path()).unwrap();
        assert!(!sb.read_paths.iter().any(|p| real.starts_with(p)), "{:?}", sb.read_paths);
        assert!(sb.read_paths.contains(&std::fs::canonicalize("/usr").unwrap()));
    }
}
