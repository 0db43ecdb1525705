//! `pipewright-step`: the step launcher on its own, a small program that starts in a fraction of the time the
//! whole `pipewright` binary takes. `pipewright` runs every step through it (when it sits next to
//! `pipewright`; otherwise through `pipewright __step-sandbox`): it confines itself with Landlock, drops to the
//! step user when asked, and executes the step's program. See `engine::sandbox`.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let args = match args.first() {
        Some(a) if a == engine::sandbox::LAUNCHER_ARG => &args[1..],
        _ => &args[..],
    };
    engine::sandbox::launcher_main(args)
}
