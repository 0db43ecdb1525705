//! `pipewright secret rotate-key`: seal every secret value stored in a state directory again under a new key,
//! then forget the old key. Run it on the server's machine (a running server picks the new key up from the
//! key file when it meets a value sealed with it).

use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

/// `pipewright secret …`.
#[derive(Subcommand)]
pub enum SecretCmd {
    /// Seal every stored secret value again under a new key and drop the old one: the key file
    /// (`<state-dir>/secret.key`) is rewritten; with PIPEWRIGHT_SECRET_KEY, the new key is printed to be set there.
    #[command(
        after_help = "Examples:\n  pipewright secret rotate-key --state-dir /var/lib/pipewright\n  PIPEWRIGHT_SECRET_KEY=… pipewright secret rotate-key --state-dir /var/lib/pipewright   # prints the new key"
    )]
    RotateKey {
        /// The server's state directory.
        #[arg(long, env = "PIPEWRIGHT_STATE_DIR", default_value = ".pipewright")]
        state_dir: PathBuf,
        /// `--database-url-file FILE` (or `PIPEWRIGHT_DATABASE_URL`): the servers' PostgreSQL database, when
        /// they keep state there (as `serve --database-url-file`).
        #[command(flatten)]
        database_url: crate::credentials::Secret<crate::credentials::DatabaseUrl>,
    },
}

/// Run a `secret` command.
pub async fn run(c: SecretCmd) -> anyhow::Result<ExitCode> {
    match c {
        SecretCmd::RotateKey { state_dir, database_url } => {
            let store = store::open(database_url.get(), &state_dir).await?;
            let (n, env_key) =
                server::rotate_secret_key(store.as_ref(), &state_dir).await.map_err(anyhow::Error::msg)?;
            match env_key {
                Some(k) => {
                    eprintln!(
                        "sealed {n} secret value(s) under a new key; set PIPEWRIGHT_SECRET_KEY to the key below before the server starts again:"
                    );
                    println!("{k}");
                }
                None => println!(
                    "sealed {n} secret value(s) under a new key; {} now holds only the new key",
                    state_dir.join(server::crypto::KEY_FILE).display()
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
